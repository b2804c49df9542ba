package provider_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
)

// poolScript sleeps, logs its C argument and records where and when it ran.
const poolScript = `import json, os, sys, time
import aml_run
start = time.time()
time.sleep(float(os.environ.get("SLEEP", "1")))
c = float(sys.argv[sys.argv.index("--C") + 1]) if "--C" in sys.argv else -1
aml_run.log("c", c)
span = {"start": start, "end": time.time(), "node": os.environ.get("AML_NODE_ID", ""),
        "rank": os.environ.get("RANK", ""), "world": os.environ.get("WORLD_SIZE", ""),
        "master": os.environ.get("MASTER_ADDR", "") + ":" + os.environ.get("MASTER_PORT", "")}
with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "span.json"), "w") as f:
    json.dump(span, f)
`

func poolConfig(wsDir, src string, minNodes, maxNodes, idle, nodeCount int, sweep string) string {
	return fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name          = "acc-pool"
  storage_path  = %q
  deletion_policy = "DELETE"
}

resource "aml_compute" "cpu" {
  workspace_id                  = aml_workspace.ws.id
  name                          = "cpu-cluster"
  vm_size                       = "standard_d1_v2"
  min_nodes                     = %d
  max_nodes                     = %d
  idle_seconds_before_scaledown = %d
  force_destroy                 = true
}

resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "py"
  node_count   = %d
  environment {
    python {
       user_managed_dependencies = true
       interpreter_path = %q
     }
  }
}

locals {
  cs = [%s]
}

# count, not for_each: terraform-plugin-testing's state checks cannot address
# string keys.
resource "aml_experiment_run" "sweep" {
  count                = length(local.cs)
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "sweep"
  source_directory     = %q
  script               = "train.py"
  arguments            = ["--C", local.cs[count.index]]
  compute_target       = aml_compute.cpu.name
  run_configuration_id = aml_run_configuration.py.id
}

data "aml_compute_target" "cpu" {
  workspace_id = aml_workspace.ws.id
  name         = aml_compute.cpu.name
  depends_on   = [aml_experiment_run.sweep]
}
`, wsDir, minNodes, maxNodes, idle, nodeCount, pythonBin, sweep, src)
}

type poolSpan struct {
	Start, End                float64
	Node, Rank, World, Master string
}

func readPoolSpan(dir string) (poolSpan, error) {
	var s poolSpan
	b, err := os.ReadFile(filepath.Join(dir, "outputs", "span.json"))
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	return s, err
}

// checkConcurrency checks the sweep's runs all ran, at most want at once and
// at some moment exactly want.
func checkConcurrency(want int) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		var spans []poolSpan
		for addr, rs := range s.RootModule().Resources {
			if !strings.HasPrefix(addr, "aml_experiment_run.sweep") {
				continue
			}
			sp, err := readPoolSpan(filepath.Dir(rs.Primary.Attributes["outputs_path"]))
			if err != nil {
				return fmt.Errorf("%s: %v", addr, err)
			}
			spans = append(spans, sp)
		}
		most := 0
		for _, a := range spans {
			n := 0
			for _, b := range spans {
				if b.Start <= a.Start && a.Start < b.End {
					n++
				}
			}
			most = max(most, n)
		}
		if most != want {
			return fmt.Errorf("at most %d runs ran at once, want %d: %+v", most, want, spans)
		}
		return nil
	}
}

func TestAccCompute(t *testing.T) {
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": poolScript})
	sweep := `"0.01", "0.1", "1", "10"`
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				// The sweep: 4 runs on a max_nodes = 2 pool, two at a time.
				Config: poolConfig(wsDir, src, 0, 2, 30, 1, sweep),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("aml_compute.cpu", tfjsonpath.New("provisioning_state"), knownvalue.StringExact("Succeeded")),
					statecheck.ExpectKnownValue("aml_experiment_run.sweep[0]", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue("aml_experiment_run.sweep[0]", tfjsonpath.New("metrics").AtMapKey("c"), knownvalue.Float64Exact(0.01)),
					statecheck.ExpectKnownValue("aml_experiment_run.sweep[1]", tfjsonpath.New("metrics").AtMapKey("c"), knownvalue.Float64Exact(0.1)),
					statecheck.ExpectKnownValue("aml_experiment_run.sweep[2]", tfjsonpath.New("metrics").AtMapKey("c"), knownvalue.Float64Exact(1)),
					statecheck.ExpectKnownValue("aml_experiment_run.sweep[3]", tfjsonpath.New("metrics").AtMapKey("c"), knownvalue.Float64Exact(10)),
					statecheck.ExpectKnownValue("data.aml_compute_target.cpu", tfjsonpath.New("kind"), knownvalue.StringExact("amlcompute")),
					statecheck.ExpectKnownValue("data.aml_compute_target.cpu", tfjsonpath.New("current_node_count"), knownvalue.Int64Exact(2)),
					statecheck.ExpectKnownValue("data.aml_compute_target.cpu", tfjsonpath.New("cpu_count"), knownvalue.Int64Exact(1)),
				},
				Check: checkConcurrency(2),
			},
			{
				// Scale settings change in place; nothing re-runs.
				Config: poolConfig(wsDir, src, 1, 3, 1, 1, sweep),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("aml_compute.cpu", plancheck.ResourceActionUpdate),
					plancheck.ExpectResourceAction("aml_experiment_run.sweep[2]", plancheck.ResourceActionNoop),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("aml_compute.cpu", tfjsonpath.New("min_nodes"), knownvalue.Int64Exact(1)),
					statecheck.ExpectKnownValue("aml_compute.cpu", tfjsonpath.New("max_nodes"), knownvalue.Int64Exact(3)),
				},
			},
			{
				// With idle_seconds_before_scaledown = 1 the pool shrinks to
				// min_nodes by itself.
				PreConfig: func() { time.Sleep(4 * time.Second) },
				Config:    poolConfig(wsDir, src, 1, 3, 1, 1, sweep),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("data.aml_compute_target.cpu", tfjsonpath.New("current_node_count"), knownvalue.Int64Exact(1)),
					statecheck.ExpectKnownValue("data.aml_compute_target.cpu", tfjsonpath.New("node_state_counts").AtMapKey("idle"), knownvalue.Int64Exact(1)),
				},
			},
			{
				ResourceName:            "aml_compute.cpu",
				ImportState:             true,
				ImportStateIdFunc:       importIDFromState("aml_compute.cpu"),
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"force_destroy", "wait_for_completion", "timeouts", "vm_size", "current_node_count", "target_node_count", "allocation_state", "node_state_counts"},
			},
		},
	})
	assertNoNodeAgents(t, wsDir)
}

// A 2-node run sees ranks 0 and 1 and one MASTER_ADDR:MASTER_PORT.
func TestAccCompute_multiNodeRun(t *testing.T) {
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": "import os\nos.environ['SLEEP'] = '0.2'\n" + poolScript})
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: poolConfig(wsDir, src, 0, 2, 30, 2, `"1"`),
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue("aml_experiment_run.sweep[0]", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
			},
			Check: func(s *terraform.State) error {
				dir := filepath.Dir(s.RootModule().Resources["aml_experiment_run.sweep.0"].Primary.Attributes["outputs_path"])
				r0, err := readPoolSpan(dir)
				if err != nil {
					return err
				}
				r1, err := readPoolSpan(filepath.Join(dir, ".aml", "rank-1"))
				if err != nil {
					return err
				}
				if r0.Rank != "0" || r1.Rank != "1" || r0.World != "2" || r1.World != "2" || r0.Master != r1.Master || r0.Node == r1.Node {
					return fmt.Errorf("ranks: %+v / %+v", r0, r1)
				}
				return nil
			},
		}},
	})
	assertNoNodeAgents(t, wsDir)
}

// A node agent killed with SIGKILL mid-run: the run is queued again and completes.
func TestAccCompute_killedAgentRequeues(t *testing.T) {
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": "import os\nos.environ['SLEEP'] = '3'\n" + poolScript})
	config := strings.Replace(poolConfig(wsDir, src, 0, 1, 30, 1, `"1"`), `run_configuration_id = aml_run_configuration.py.id`,
		"run_configuration_id = aml_run_configuration.py.id\n  wait_for_completion = false", 1)
	var runID string
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config,
				Check: func(s *terraform.State) error {
					var err error
					runID, err = stateAttr(s, "aml_experiment_run.sweep.0", "id")
					return err
				},
			},
			{
				PreConfig: func() {
					e := testEngine(t)
					ctx := context.Background()
					if err := testutil.Poll(30*time.Second, "the run to start on a node", func() (bool, error) {
						r, err := e.ReadRun(ctx, runID)
						return err == nil && r.Status == run.Running, err
					}); err != nil {
						logPoolRun(t, e, runID, wsDir)
						t.Fatal(err)
					}
					pid := poolNodePID(t, wsDir)
					if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
						t.Fatalf("killing node agent %d: %v", pid, err)
					}
					if err := testutil.Poll(60*time.Second, "the requeued run to complete", func() (bool, error) {
						r, err := e.ReadRun(ctx, runID)
						return err == nil && r.Status.Terminal(), err
					}); err != nil {
						logPoolRun(t, e, runID, wsDir)
						t.Fatal(err)
					}
					if r, err := e.ReadRun(ctx, runID); err == nil && r.Status != run.Completed {
						logPoolRun(t, e, runID, wsDir)
					}
				},
				RefreshState: true,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("aml_experiment_run.sweep.0", "status", "Completed"),
					resource.TestMatchResourceAttr("aml_experiment_run.sweep.0", "log_tail", wrapped("queued again")),
				),
			},
		},
	})
	assertNoNodeAgents(t, wsDir)
}

// logPoolRun logs what explains a pool run's course: its record, the node
// agents' logs and the run directory's control files and logs.
func logPoolRun(t *testing.T, e *engine.Engine, runID, wsDir string) {
	t.Helper()
	if r, err := e.ReadRun(context.Background(), runID); err == nil {
		t.Logf("run %s: %s (%s) %q", runID, r.Status, r.FailureReason, r.Message)
	}
	var files []string
	for _, pattern := range []string{"pools/cpu-cluster/*.log", "runs/*/.aml/*.json", "runs/*/.aml/*.log", "runs/*/logs/*"} {
		m, _ := filepath.Glob(filepath.Join(wsDir, filepath.FromSlash(pattern)))
		files = append(files, m...)
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		t.Logf("%s:\n%s", f, b)
	}
}

// poolNodePID is the pid of the node agent that claimed a run (from its log).
func poolNodePID(t *testing.T, wsDir string) int {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(wsDir, "pools", "cpu-cluster", "*.log"))
	for _, f := range logs {
		b, _ := os.ReadFile(f)
		s := string(b)
		if !strings.Contains(s, "claimed run") {
			continue
		}
		var pid int
		if i := strings.Index(s, "started (pid "); i >= 0 {
			fmt.Sscanf(s[i+len("started (pid "):], "%d", &pid)
			return pid
		}
	}
	t.Fatal("no node agent claimed a run")
	return 0
}

// assertNoNodeAgents checks that destroy stopped every node of the pool.
func assertNoNodeAgents(t *testing.T, wsDir string) {
	t.Helper()
	out, _ := os.ReadDir("/proc")
	for _, d := range out {
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), "node\x00"+wsDir) {
			t.Errorf("node agent still running after destroy: pid %s", d.Name())
		}
	}
}

func TestAccCompute_badInput(t *testing.T) {
	wsDir := filepath.Join(t.TempDir(), "ws")
	cfg := func(name, size string, minNodes, maxNodes int) string {
		return fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name          = "acc-pool-bad"
  storage_path  = %q
  deletion_policy = "DELETE"
}

resource "aml_compute" "bad" {
  workspace_id = aml_workspace.ws.id
  name         = %q
  vm_size      = %q
  min_nodes    = %d
  max_nodes    = %d
}
`, wsDir, name, size, minNodes, maxNodes)
	}
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: cfg("cpu", "STANDARD_D1_V2", 3, 2), ExpectError: wrapped("min_nodes: 3 is larger than max_nodes (2)")},
			{Config: cfg("cpu", "STANDARD_D1_V2", 0, 0), ExpectError: wrapped("max_nodes value must be at least 1")},
			{Config: cfg("cpu", "STANDARD_Z9", 0, 1), ExpectError: wrappedAll(`unknown vm_size "STANDARD_Z9"`, "STANDARD_D1_V2", "STANDARD_NC6")},
			{Config: cfg("cpu", "CUSTOM_512C_1GB", 0, 1), ExpectError: wrappedAll("CUSTOM_512C_1GB", "is larger than this host")},
			{Config: cfg("local", "STANDARD_D1_V2", 0, 1), ExpectError: wrapped("local")},
			{Config: cfg("amlcompute", "STANDARD_D1_V2", 0, 1), ExpectError: wrapped("amlcompute")},
		},
	})
}

// compute_target = "amlcompute": a pool made for the run and deleted after it.
func TestAccCompute_runBased(t *testing.T) {
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": "import os\nos.environ['SLEEP'] = '0.2'\n" + poolScript})
	cfg := func(extra string) string {
		return fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name          = "acc-rb"
  storage_path  = %q
  deletion_policy = "DELETE"
}

resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "py"
  environment {
    python {
       user_managed_dependencies = true
       interpreter_path = %q
     }
  }
}

resource "aml_experiment_run" "rb" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "run-based"
  source_directory     = %q
  script               = "train.py"
  arguments            = ["--C", "2"]
  compute_target       = "amlcompute"
  run_configuration_id = aml_run_configuration.py.id
  %s
}
`, wsDir, pythonBin, src, extra)
	}
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: cfg(""), ExpectError: wrapped("run_based_compute: compute_target = \"amlcompute\" creates a pool")},
			{
				Config: cfg(`run_based_compute {
				  vm_size = "STANDARD_D1_V2"
				  max_nodes = 1
				}`),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("aml_experiment_run.rb", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue("aml_experiment_run.rb", tfjsonpath.New("metrics").AtMapKey("c"), knownvalue.Float64Exact(2)),
				},
				Check: func(s *terraform.State) error {
					dir := filepath.Dir(s.RootModule().Resources["aml_experiment_run.rb"].Primary.Attributes["outputs_path"])
					sp, err := readPoolSpan(dir)
					if err != nil {
						return err
					}
					if !strings.HasPrefix(sp.Node, "rb-") {
						return fmt.Errorf("the run ran on node %q, not on a run-based pool", sp.Node)
					}
					// The pool is gone with its run; the run stays as history.
					ts, err := testEngine(t).ReadTargetStatus(context.Background(), wsDir, strings.SplitN(sp.Node, "-n", 2)[0])
					if err == nil {
						return fmt.Errorf("run-based pool still exists after its run: %+v", ts)
					}
					return nil
				},
			},
		},
	})
	assertNoNodeAgents(t, wsDir)
}
