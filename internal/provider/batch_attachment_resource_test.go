package provider_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/openaml/terraform-provider-aml/internal/testutil"
	slurmtest "github.com/openaml/terraform-provider-aml/internal/testutil/slurm"
	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
)

// slurmPrelude is a workspace, an attachment of the test cluster (attrs go
// into it) and a user-managed run configuration rc with rcExtra.
func slurmPrelude(wsDir, sharedRoot, attrs, rcExtra string) string {
	return fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name            = "acc-slurm"
  storage_path    = %q
  deletion_policy = "DELETE"
}

resource "aml_batch_attachment" "hpc" {
  workspace_id = aml_workspace.ws.id
  name         = "hpc"
  shared_root  = %q
  force_detach = true
  %s
}

resource "aml_run_configuration" "rc" {
  workspace_id = aml_workspace.ws.id
  name         = "rc"
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "/usr/bin/python3"
    }
  }
  %s
}
`, wsDir, sharedRoot, attrs, rcExtra)
}

func slurmRun(name, src, script, extra string) string {
	return fmt.Sprintf(`
resource "aml_experiment_run" %q {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = %q
  source_directory     = %q
  script               = %q
  compute_target       = aml_batch_attachment.hpc.name
  run_configuration_id = aml_run_configuration.rc.id
  %s
}
`, name, name, src, script, extra)
}

func slurmExample(t *testing.T) string {
	t.Helper()
	src, err := filepath.Abs(filepath.Join("..", "..", "examples", "slurm", "src"))
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// sharedRoot is a directory of the cluster that every user may write.
func sharedRoot(t *testing.T, c *slurmtest.Cluster) string {
	t.Helper()
	d := filepath.Join(c.Dir, "shared")
	if err := os.MkdirAll(d, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o1777); err != nil {
		t.Fatal(err)
	}
	return d
}

const rankScript = `import json, os, socket
import aml_run
rank = int(os.environ.get("RANK", "0"))
with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "rank-%d.json" % rank), "w") as f:
    json.dump({k: os.environ.get(k) for k in ["RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "AML_NODE_IPS", "AML_ATTEMPT", "SLURM_JOB_ID"]}, f)
if rank == 0:
    aml_run.log("world_size", float(os.environ.get("WORLD_SIZE", "1")))
    aml_run.log("attempt", float(os.environ["AML_ATTEMPT"]))
print("rank", rank, "on", socket.gethostname(), flush=True)
`

// Attach from this machine: partitions in state; a single-node run with its
// metric and job id; a 2-node run whose ranks share MASTER_ADDR and the
// outputs directory; import.
func TestAccBatchAttachment_local(t *testing.T) {
	testAccPreCheck(t)
	c := slurmtest.Start(t)
	t.Setenv("SLURM_CONF", c.Conf)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": rankScript})
	config := slurmPrelude(wsDir, sharedRoot(t, c), "", "") + slurmRun("one", src, "train.py", "") + `
resource "aml_run_configuration" "two" {
  workspace_id = aml_workspace.ws.id
  name         = "two"
  node_count   = 2
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "/usr/bin/python3"
    }
  }
}
` + strings.Replace(slurmRun("two", src, "train.py", ""), "aml_run_configuration.rc.id", "aml_run_configuration.two.id", 1) +
		strings.Replace(slurmRun("example", slurmExample(t), "train.py", ""), "aml_run_configuration.rc.id", "aml_run_configuration.two.id", 1)
	const hpc = "aml_batch_attachment.hpc"
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(hpc, tfjsonpath.New("cluster_name"), knownvalue.StringExact("amltest")),
					statecheck.ExpectKnownValue(hpc, tfjsonpath.New("slurm_version"), knownvalue.StringRegexp(regexp.MustCompile(`^\d+\.\d+\.\d+`))),
					statecheck.ExpectKnownValue(hpc, tfjsonpath.New("default_partition"), knownvalue.StringExact("debug")),
					statecheck.ExpectKnownValue(hpc, tfjsonpath.New("partitions"), knownvalue.ListExact([]knownvalue.Check{
						knownvalue.ObjectExact(map[string]knownvalue.Check{"name": knownvalue.StringExact("debug"), "nodes": knownvalue.Int64Exact(2), "state": knownvalue.StringExact("up"), "max_time": knownvalue.StringExact("infinite"), "default": knownvalue.Bool(true)}),
						knownvalue.ObjectExact(map[string]knownvalue.Check{"name": knownvalue.StringExact("single"), "nodes": knownvalue.Int64Exact(1), "state": knownvalue.StringExact("up"), "max_time": knownvalue.StringExact("1:00:00"), "default": knownvalue.Bool(false)}),
					})),
					statecheck.ExpectKnownValue("aml_experiment_run.one", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue("aml_experiment_run.one", tfjsonpath.New("slurm_job_id"), knownvalue.StringRegexp(regexp.MustCompile(`^\d+$`))),
					statecheck.ExpectKnownValue("aml_experiment_run.one", tfjsonpath.New("metrics").AtMapKey("world_size"), knownvalue.Float64Exact(1)),
					statecheck.ExpectKnownValue("aml_experiment_run.two", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue("aml_experiment_run.two", tfjsonpath.New("metrics").AtMapKey("world_size"), knownvalue.Float64Exact(2)),
					statecheck.ExpectKnownValue("aml_experiment_run.example", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue("aml_experiment_run.example", tfjsonpath.New("metrics").AtMapKey("world_size"), knownvalue.Float64Exact(2)),
					statecheck.ExpectKnownValue("aml_experiment_run.example", tfjsonpath.New("output_files"), knownvalue.ListExact([]knownvalue.Check{
						knownvalue.StringExact("checkpoint-rank0.json"), knownvalue.StringExact("checkpoint-rank1.json")})),
					statecheck.ExpectKnownValue("aml_experiment_run.two", tfjsonpath.New("output_files"), knownvalue.ListExact([]knownvalue.Check{
						knownvalue.StringExact("rank-0.json"), knownvalue.StringExact("rank-1.json")})),
				},
				Check: func(s *terraform.State) error {
					outputs, err := stateAttr(s, "aml_experiment_run.two", "outputs_path")
					if err != nil {
						return err
					}
					var master []string
					for r := 0; r < 2; r++ {
						b, err := os.ReadFile(filepath.Join(outputs, fmt.Sprintf("rank-%d.json", r)))
						if err != nil {
							return err
						}
						if !strings.Contains(string(b), fmt.Sprintf(`"RANK": "%d"`, r)) || !strings.Contains(string(b), `"WORLD_SIZE": "2"`) {
							return fmt.Errorf("rank %d saw %s", r, b)
						}
						i := strings.Index(string(b), `"MASTER_ADDR": `)
						master = append(master, string(b)[i:i+30])
					}
					if master[0] != master[1] || !strings.Contains(master[0], "127.0.0.1") {
						return fmt.Errorf("ranks saw MASTER_ADDR %q and %q", master[0], master[1])
					}
					return nil
				},
			},
			{
				ResourceName:            hpc,
				ImportState:             true,
				ImportStateIdFunc:       importIDFromState(hpc),
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"force_detach", "timeouts"},
			},
		},
	})
}

// A run over its time limit is Failed/timed_out; a failing one keeps its exit
// code; a node_count larger than the partition and an unknown partition are
// refused.
func TestAccBatchAttachment_failures(t *testing.T) {
	testAccPreCheck(t)
	c := slurmtest.Start(t)
	t.Setenv("SLURM_CONF", c.Conf)
	wsDir := filepath.Join(t.TempDir(), "ws")
	root := sharedRoot(t, c)
	src := newSourceDir(t, map[string]string{"slow.py": "import time\ntime.sleep(60)\n", "fail.py": "import sys\nprint('failing', flush=True)\nsys.exit(3)\n"})
	prelude := slurmPrelude(wsDir, root, "", "max_run_duration_seconds = 3")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: prelude + slurmRun("slow", src, "slow.py", "allow_failure = true") + slurmRun("fail", src, "fail.py", "allow_failure = true"),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("aml_experiment_run.slow", tfjsonpath.New("status"), knownvalue.StringExact("Failed")),
					statecheck.ExpectKnownValue("aml_experiment_run.slow", tfjsonpath.New("failure_reason"), knownvalue.StringExact("timed_out")),
					statecheck.ExpectKnownValue("aml_experiment_run.fail", tfjsonpath.New("status"), knownvalue.StringExact("Failed")),
					statecheck.ExpectKnownValue("aml_experiment_run.fail", tfjsonpath.New("exit_code"), knownvalue.Int64Exact(3)),
				},
			},
			{
				Config: prelude + `
resource "aml_run_configuration" "three" {
  workspace_id = aml_workspace.ws.id
  name         = "three"
  node_count   = 3
  environment {
    python {
      user_managed_dependencies = true
    }
  }
}
` + strings.Replace(slurmRun("big", src, "fail.py", ""), "aml_run_configuration.rc.id", "aml_run_configuration.three.id", 1),
				ExpectError: wrappedAll("node_count = 3", `partition "debug" of cluster amltest has 2 node(s)`),
			},
			{
				Config:      strings.Replace(slurmPrelude(wsDir+"2", root, `partition = "gpu"`, ""), `name            = "acc-slurm"`, `name            = "acc-slurm2"`, 1),
				ExpectError: wrappedAll(`partition: "gpu" is not a partition of cluster amltest`, "it has: debug, single"),
			},
		},
	})
}

// Destroy cancels a pending job: the run waits behind another job on the
// one-node partition, and destroying it leaves no job of it in the queue.
func TestAccBatchAttachment_destroyCancelsPending(t *testing.T) {
	testAccPreCheck(t)
	c := slurmtest.Start(t)
	t.Setenv("SLURM_CONF", c.Conf)
	blocker, err := c.Run("sbatch", "--parsable", "--partition=single", "--wrap=sleep 300", "--output=/dev/null")
	if err != nil {
		t.Fatalf("blocker job: %v %s", err, blocker)
	}
	t.Cleanup(func() { _, _ = c.Run("scancel", strings.TrimSpace(blocker)) })
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": rankScript})
	var jobID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy: func(*terraform.State) error {
			return testutil.Poll(30*time.Second, "job "+jobID+" to leave the queue", func() (bool, error) {
				out, err := c.Run("squeue", "-h", "-j", jobID, "-o", "%T")
				return err != nil || strings.TrimSpace(out) == "", nil
			})
		},
		Steps: []resource.TestStep{{
			Config: slurmPrelude(wsDir, sharedRoot(t, c), `partition = "single"`, "") + slurmRun("queued", src, "train.py", "wait_for_completion = false"),
			Check: func(s *terraform.State) error {
				var err error
				if jobID, err = stateAttr(s, "aml_experiment_run.queued", "slurm_job_id"); err != nil {
					return err
				}
				out, _ := c.Run("squeue", "-h", "-j", jobID, "-o", "%T %r")
				if !strings.HasPrefix(out, "PENDING") {
					return fmt.Errorf("job %s is %q, want PENDING behind the blocker", jobID, out)
				}
				return nil
			},
		}},
	})
}

// A node dies under a run with max_retries = 1: the job ends NODE_FAIL, the
// run is requeued (same run, AML_ATTEMPT 2) and completes on the other node.
func TestAccBatchAttachment_requeueAfterNodeFailure(t *testing.T) {
	testAccPreCheck(t)
	c := slurmtest.Start(t)
	t.Setenv("SLURM_CONF", c.Conf)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": `import os, time, aml_run
aml_run.log("attempt", float(os.environ["AML_ATTEMPT"]))
if os.environ["AML_ATTEMPT"] == "1":
    open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "started"), "w").write(os.environ["SLURMD_NODENAME"] + " " + os.environ["SLURM_JOB_ID"])
    time.sleep(120)
`})
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		// Kill the node the first attempt runs on, once it has started.
		var root = filepath.Join(c.Dir, "shared", "runs")
		for {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
			m, _ := filepath.Glob(filepath.Join(root, "*", "outputs", "started"))
			if len(m) > 0 {
				b, _ := os.ReadFile(m[0])
				node, job, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
				c.Kill(node)
				// Its job steps' slurmstepd daemons die with the node.
				for _, pid := range processesNaming("slurmstepd: [" + job + ".") {
					if n, err := strconv.Atoi(pid); err == nil {
						_ = syscall.Kill(n, syscall.SIGKILL)
					}
				}
				// The node is dead: what ran there goes too (a killed slurmd
				// alone would leave its job step running on this one machine).
				var st struct {
					SupervisorPID int `json:"supervisor_pid"`
					ChildPID      int `json:"child_pid"`
				}
				b, _ = os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(m[0])), ".aml", "status.json"))
				_ = json.Unmarshal(b, &st)
				if st.ChildPID > 0 {
					_ = syscall.Kill(-st.ChildPID, syscall.SIGKILL)
				}
				if st.SupervisorPID > 0 {
					_ = syscall.Kill(st.SupervisorPID, syscall.SIGKILL)
				}
				return
			}
		}
	}()
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: slurmPrelude(wsDir, sharedRoot(t, c), "", "slurm {\n    max_retries = 1\n  }") + slurmRun("resilient", src, "train.py", ""),
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue("aml_experiment_run.resilient", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
				statecheck.ExpectKnownValue("aml_experiment_run.resilient", tfjsonpath.New("metrics").AtMapKey("attempt"), knownvalue.Float64Exact(2)),
			},
		}},
	})
}

// Submitting through a login node over SSH: jobs run as the login user.
func TestAccBatchAttachment_loginOverSSH(t *testing.T) {
	testAccPreCheck(t)
	c := slurmtest.Start(t)
	srv := sshd.Start(t, sshd.Options{SessionEnv: map[string]string{"SLURM_CONF": c.Conf}})
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": rankScript + "import getpass\naml_run.log('as_login_user', 1.0 if getpass.getuser() == " + fmt.Sprintf("%q", srv.User) + " else 0.0)\n"})
	login := fmt.Sprintf("login {\n    address     = \"127.0.0.1\"\n    ssh_port    = %d\n    username    = %q\n    private_key = %q\n    host_key    = %q\n  }", srv.Port, srv.User, string(srv.KeyPEM), srv.HostKey)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: slurmPrelude(wsDir, filepath.Join(sharedRoot(t, c), "viaLogin"), login, "") + slurmRun("remote", src, "train.py", ""),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("aml_batch_attachment.hpc", tfjsonpath.New("cluster_name"), knownvalue.StringExact("amltest")),
					statecheck.ExpectKnownValue("aml_experiment_run.remote", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue("aml_experiment_run.remote", tfjsonpath.New("metrics").AtMapKey("as_login_user"), knownvalue.Float64Exact(1)),
					statecheck.ExpectKnownValue("aml_experiment_run.remote", tfjsonpath.New("output_files"), knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("rank-0.json")})),
				},
			},
			{
				ResourceName:            "aml_batch_attachment.hpc",
				ImportState:             true,
				ImportStateIdFunc:       importIDFromState("aml_batch_attachment.hpc"),
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"force_detach", "timeouts"},
			},
		},
	})
}
