package provider_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
)

// remoteConfig attaches srv (key auth, through bastion when set) and sends a
// run of src there with a user-managed python3 on the host.
func remoteConfig(wsDir string, srv, bastion *sshd.Server, hostKey, src, script string, wait bool) string {
	hk := ""
	if hostKey != "" {
		hk = fmt.Sprintf("host_key = %q", hostKey)
	}
	b := ""
	if bastion != nil {
		b = fmt.Sprintf(`bastion {
    address     = "127.0.0.1"
    ssh_port    = %d
    username    = %q
    private_key = %q
    host_key    = %q
  }`, bastion.Port, bastion.User, string(bastion.KeyPEM), bastion.HostKey)
	}
	return fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name          = "acc-remote"
  storage_path  = %q
  deletion_policy = "DELETE"
}

resource "aml_remote_compute" "host" {
  workspace_id = aml_workspace.ws.id
  name         = "attach-host"
  address      = "127.0.0.1"
  ssh_port     = %d
  username     = %q
  private_key  = %q
  force_detach = true
  %s
  %s
}

resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "host-python"
  environment {
    python {
       user_managed_dependencies = true
       interpreter_path = "python3"
     }
  }
}

resource "aml_experiment_run" "remote" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "remote"
  source_directory     = %q
  script               = %q
  arguments            = ["--C", "1.0"]
  compute_target       = aml_remote_compute.host.name
  run_configuration_id = aml_run_configuration.py.id
  wait_for_completion  = %t
}
`, wsDir, srv.Port, srv.User, string(srv.KeyPEM), hk, b, src, script, wait)
}

// remoteTrainScript runs as the host's user and reports who and where it ran.
const remoteTrainScript = `import getpass, os, sys, time
import aml_run
print("training on", os.uname().nodename, "as", getpass.getuser(), "args", sys.argv[1:], flush=True)
time.sleep(float(os.environ.get("SLEEP", "0")))
aml_run.log("accuracy", 0.91)
aml_run.log("is_remote_user", 1.0 if os.environ["AML_OUTPUTS_DIR"].startswith(os.path.expanduser("~")) else 0.0)
os.makedirs(os.path.join(os.environ["AML_OUTPUTS_DIR"], "nested"), exist_ok=True)
with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "nested", "model.txt"), "w") as f:
    f.write("remote weights")
`

func TestAccRemoteCompute(t *testing.T) {
	testAccPreCheck(t)
	srv := sshd.Start(t, sshd.Options{})
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": remoteTrainScript})
	// The user-managed quickstart (standard library only) runs there too.
	quickstart, err := filepath.Abs(filepath.Join("..", "..", "examples", "user-managed-python", "src"))
	if err != nil {
		t.Fatal(err)
	}
	withQuickstart := remoteConfig(wsDir, srv, nil, "", src, "train.py", true) + fmt.Sprintf(`
resource "aml_experiment_run" "quickstart" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "iris"
  source_directory     = %q
  script               = "train.py"
  arguments            = ["--C", "1.0"]
  compute_target       = aml_remote_compute.host.name
  run_configuration_id = aml_run_configuration.py.id
}

data "aml_compute_target" "host" {
  workspace_id = aml_workspace.ws.id
  name         = aml_remote_compute.host.name
}

data "aml_compute_target" "local" {
  workspace_id = aml_workspace.ws.id
  name         = "local"
}
`, quickstart)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				// Attach with trust on first use, probe, run there, bring results back.
				Config: withQuickstart,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("aml_remote_compute.host", tfjsonpath.New("provisioning_state"), knownvalue.StringExact("Succeeded")),
					statecheck.ExpectKnownValue("aml_remote_compute.host", tfjsonpath.New("os"), knownvalue.StringExact("linux")),
					statecheck.ExpectKnownValue("aml_remote_compute.host", tfjsonpath.New("host_key"), knownvalue.StringExact(srv.HostKey)),
					statecheck.ExpectKnownValue("aml_remote_compute.host", tfjsonpath.New("host_key_fingerprint"), knownvalue.StringExact(srv.HostKeyFingerprint)),
					statecheck.ExpectKnownValue("aml_remote_compute.host", tfjsonpath.New("python_versions"), knownvalue.ListSizeExact(len(pythonVersionsOf(t, srv)))),
					statecheck.ExpectKnownValue("aml_remote_compute.host", tfjsonpath.New("gpu_count"), knownvalue.Int64Exact(0)),
					statecheck.ExpectKnownValue("aml_remote_compute.host", tfjsonpath.New("remote_root"), knownvalue.StringExact(srv.Home+"/.aml")),
					statecheck.ExpectKnownValue("aml_experiment_run.remote", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue("aml_experiment_run.remote", tfjsonpath.New("exit_code"), knownvalue.Int64Exact(0)),
					statecheck.ExpectKnownValue("aml_experiment_run.remote", tfjsonpath.New("metrics").AtMapKey("accuracy"), knownvalue.Float64Exact(0.91)),
					statecheck.ExpectKnownValue("aml_experiment_run.remote", tfjsonpath.New("metrics").AtMapKey("is_remote_user"), knownvalue.Float64Exact(1)),
					statecheck.ExpectKnownValue("aml_experiment_run.remote", tfjsonpath.New("output_files"),
						knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("nested/model.txt")})),
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("data.aml_compute_target.host", "kind", "ssh"),
					resource.TestCheckResourceAttr("data.aml_compute_target.host", "address", "127.0.0.1"),
					resource.TestCheckResourceAttrPair("data.aml_compute_target.host", "cpu_count", "aml_remote_compute.host", "cpu_count"),
					resource.TestCheckResourceAttr("data.aml_compute_target.local", "kind", "local"),
					resource.TestCheckResourceAttr("aml_experiment_run.quickstart", "status", "Completed"),
					resource.TestCheckResourceAttr("aml_experiment_run.quickstart", "output_files.0", "model.json"),
					resource.TestCheckResourceAttrWith("aml_experiment_run.quickstart", "metrics.accuracy", func(v string) error {
						var acc float64
						if _, err := fmt.Sscanf(v, "%g", &acc); err != nil || acc < 0.9 {
							return fmt.Errorf("quickstart accuracy on the remote host is %q, want >= 0.9", v)
						}
						return nil
					}),
					resource.TestCheckResourceAttrWith("aml_experiment_run.quickstart", "outputs_path", func(v string) error {
						_, err := os.Stat(filepath.Join(v, "model.json"))
						return err
					}),
					resource.TestCheckResourceAttrWith("aml_remote_compute.host", "cpu_count", positive),
					resource.TestCheckResourceAttrWith("aml_remote_compute.host", "memory_mb", positive),
					resource.TestMatchResourceAttr("aml_experiment_run.remote", "log_tail",
						regexp.MustCompile(`training on .* as `+regexp.QuoteMeta(srv.User)+` args \['--C', '1.0'\]`)),
					func(s *terraform.State) error {
						// Outputs and logs came back into the local workspace.
						outputs, err := stateAttr(s, "aml_experiment_run.remote", "outputs_path")
						if err != nil {
							return err
						}
						if rel, err := filepath.Rel(wsDir, outputs); err != nil || rel[:4] != "runs" {
							return fmt.Errorf("outputs_path %s is not in the local workspace %s", outputs, wsDir)
						}
						b, err := os.ReadFile(filepath.Join(outputs, "nested", "model.txt"))
						if err != nil || string(b) != "remote weights" {
							return fmt.Errorf("output file not brought back: %q, %v", b, err)
						}
						// The credentials are kept for refreshes, readable by the owner only.
						st, err := os.Stat(filepath.Join(wsDir, "secrets", "attach-host.json"))
						if err != nil {
							return err
						}
						if st.Mode().Perm() != 0o600 {
							return fmt.Errorf("secrets file mode %o, want 600", st.Mode().Perm())
						}
						return nil
					},
				),
			},
			{
				ResourceName:            "aml_remote_compute.host",
				ImportState:             true,
				ImportStateIdFunc:       importIDFromState("aml_remote_compute.host"),
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"force_detach", "timeouts"},
			},
		},
	})
}

func positive(v string) error {
	if v == "" || v == "0" || v[0] == '-' {
		return fmt.Errorf("got %q, want a positive number", v)
	}
	return nil
}

// pythonVersionsOf asks the host, as its user, which Pythons its PATH has.
func pythonVersionsOf(t *testing.T, srv *sshd.Server) []string {
	t.Helper()
	c, err := remotePool(t).Get(context.Background(), srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Output(context.Background(), `for p in $(IFS=:; for d in $PATH; do ls "$d" 2>/dev/null | grep -E '^python(3(\.[0-9]+)?)?$' | sed "s|^|$d/|"; done); do "$p" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null; done | sort -u`)
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, l := range regexp.MustCompile(`\S+`).FindAllString(string(out), -1) {
		versions = append(versions, l)
	}
	return versions
}

func TestAccRemoteCompute_hostKeyMismatch(t *testing.T) {
	testAccPreCheck(t)
	srv := sshd.Start(t, sshd.Options{})
	other := sshd.Start(t, sshd.Options{}) // a different host key
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": remoteTrainScript})
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config:      remoteConfig(wsDir, srv, nil, other.HostKey, src, "train.py", true),
			ExpectError: wrappedAll("host key", other.HostKeyFingerprint, srv.HostKeyFingerprint),
		}},
	})
	if n, err := completeTargets(t, wsDir); err != nil || n != 0 {
		t.Errorf("a refused attach recorded %d target(s) (%v)", n, err)
	}
}

func TestAccRemoteCompute_bastion(t *testing.T) {
	testAccPreCheck(t)
	srv := sshd.Start(t, sshd.Options{})
	jump := sshd.StartBastion(t, srv)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": remoteTrainScript})
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: remoteConfig(wsDir, srv, jump, srv.HostKey, src, "train.py", true),
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue("aml_experiment_run.remote", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
				statecheck.ExpectKnownValue("aml_experiment_run.remote", tfjsonpath.New("metrics").AtMapKey("accuracy"), knownvalue.Float64Exact(0.91)),
			},
		}},
	})
}

// A run goes on while the host's sshd restarts and every connection drops; the
// next refresh reconnects and picks up its result.
func TestAccRemoteCompute_runSurvivesSSHDRestart(t *testing.T) {
	testAccPreCheck(t)
	srv := sshd.Start(t, sshd.Options{})
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{
		"train.py": "import os\nos.environ['SLEEP'] = '3'\n" + remoteTrainScript,
	})
	config := remoteConfig(wsDir, srv, nil, srv.HostKey, src, "train.py", false)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config,
				Check: resource.TestCheckResourceAttrWith("aml_experiment_run.remote", "status", func(v string) error {
					if v == "Completed" || v == "Failed" {
						return fmt.Errorf("status %s: the run should still be going", v)
					}
					return nil
				}),
			},
			{
				PreConfig: func() {
					srv.Stop()
					srv.DropConnections()
					time.Sleep(4 * time.Second) // the run finishes while nothing listens
					srv.Restart(t)
				},
				RefreshState: true,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("aml_experiment_run.remote", "status", "Completed"),
					resource.TestCheckResourceAttr("aml_experiment_run.remote", "metrics.accuracy", "0.91"),
				),
			},
		},
	})
}

func completeTargets(t *testing.T, wsDir string) (int, error) {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(wsDir, "secrets", "*.json"))
	return len(matches), err
}
