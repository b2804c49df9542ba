package provider_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/compare"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
	"github.com/openaml/terraform-provider-aml/internal/provider"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
)

// envTrainScript reports, as metrics, the accuracy it was written with and the
// variables and arguments it received.
func envTrainScript(accuracy string) string {
	return `import os
import sys
import aml_run

print("hello from train.py", flush=True)
aml_run.log("accuracy", ` + accuracy + `)
aml_run.log("loss", 0.5, step=1)
aml_run.log("loss", 0.25, step=2)
aml_run.log("from_config", float(os.environ["FROM_CONFIG"]))
aml_run.log("shared", float(os.environ["SHARED"]))
aml_run.log("argc", len(sys.argv) - 1)
with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "model.txt"), "w") as f:
    f.write("weights " + " ".join(sys.argv[1:]))
`
}

func TestAccExperimentRunResource(t *testing.T) {
	testAccPreCheck(t)
	var fastPlans0, fastReads0, fastUpgrades0, fastValidations0 int64
	fastCreates0, fastApplies0 := provider.FastCreatePlans(), provider.FastCreateApplies()
	wsDir := filepath.Join(t.TempDir(), "ws")
	files := map[string]string{
		"train.py":    envTrainScript("0.93"),
		"data.txt":    "some data\n",
		".amlignore":  "ignored.txt\n",
		"ignored.txt": "scratch v1\n",
	}
	src := newSourceDir(t, files)
	// The snapshot is everything .amlignore does not exclude (the .amlignore too).
	wantFiles, wantBytes := int64(0), int64(0)
	for name, body := range files {
		if name != "ignored.txt" {
			wantFiles++
			wantBytes += int64(len(body))
		}
	}

	config := func(owner, trigger string) string {
		return fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name          = "acc-ws"
  storage_path  = %q
  deletion_policy = "DELETE"
}

resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "py"
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = %q
    }
  }
  environment_variables = {
    FROM_CONFIG = "1"
    SHARED      = "1"
  }
}

resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "train"
  source_directory     = %q
  script               = "train.py"
  arguments            = ["--epochs", "3"]
  compute_target       = "local"
  run_configuration_id = aml_run_configuration.py.id
  environment_variables = {
    SHARED = "2"
  }
  tags = {
    owner = %q
  }
  triggers = {
    data_version = %q
  }
}
`, wsDir, pythonBin, src, owner, trigger)
	}
	const res = "aml_experiment_run.train"
	sameRun := statecheck.CompareValue(compare.ValuesSame())
	newRun := statecheck.CompareValue(compare.ValuesDiffer())
	newSnapshot := statecheck.CompareValue(compare.ValuesDiffer())
	var firstRunID string

	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config("alice", "v1"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						// The snapshot is hashed at plan time.
						plancheck.ExpectKnownValue(res, tfjsonpath.New("snapshot_files"), knownvalue.Int64Exact(wantFiles)),
						plancheck.ExpectKnownValue(res, tfjsonpath.New("snapshot_hash"), knownvalue.NotNull()),
					},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("failure_reason"), knownvalue.StringExact("")),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("exit_code"), knownvalue.Int64Exact(0)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("run_id"), knownvalue.StringRegexp(regexp.MustCompile(`^train_\d+_[0-9a-f]{8}$`))),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("metrics"), knownvalue.MapExact(map[string]knownvalue.Check{
						"accuracy":    knownvalue.Float64Exact(0.93),
						"loss":        knownvalue.Float64Exact(0.25), // the last value logged
						"from_config": knownvalue.Float64Exact(1),    // from the run configuration
						"shared":      knownvalue.Float64Exact(2),    // the run's own value wins
						"argc":        knownvalue.Float64Exact(2),
					})),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("output_files"), knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("model.txt")})),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("log_tail"), knownvalue.StringRegexp(regexp.MustCompile(`hello from train\.py`))),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("snapshot_files"), knownvalue.Int64Exact(wantFiles)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("snapshot_bytes"), knownvalue.Int64Exact(wantBytes)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("snapshot_hash"), knownvalue.StringRegexp(regexp.MustCompile(`^\S+$`))),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("start_time"), knownvalue.StringRegexp(regexp.MustCompile(`^\d{4}-`))),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("end_time"), knownvalue.StringRegexp(regexp.MustCompile(`^\d{4}-`))),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("compute_target"), knownvalue.StringExact("local")),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("wait_for_completion"), knownvalue.Bool(true)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("allow_failure"), knownvalue.Bool(false)),
					sameRun.AddStateValue(res, tfjsonpath.New("run_id")),
					newRun.AddStateValue(res, tfjsonpath.New("run_id")),
					newSnapshot.AddStateValue(res, tfjsonpath.New("snapshot_hash")),
				},
				Check: func(s *terraform.State) error {
					runID, err := stateAttr(s, res, "run_id")
					if err != nil {
						return err
					}
					firstRunID = runID
					wsID, err := stateAttr(s, "aml_workspace.ws", "id")
					if err != nil {
						return err
					}
					if err := checkAttr(s, res, "id", wsID+"/runs/"+runID); err != nil {
						return err
					}
					outputs, _ := stateAttr(s, res, "outputs_path")
					if want := filepath.Join(wsDir, "runs", runID, "outputs"); outputs != want {
						return fmt.Errorf("outputs_path = %q, want %q", outputs, want)
					}
					b, err := os.ReadFile(filepath.Join(outputs, "model.txt"))
					if err != nil {
						return fmt.Errorf("output file missing: %w", err)
					}
					if string(b) != "weights --epochs 3" {
						return fmt.Errorf("model.txt = %q, want the script's arguments", b)
					}
					logPath, _ := stateAttr(s, res, "log_path")
					if b, err := os.ReadFile(logPath); err != nil || !strings.Contains(string(b), "hello from train.py") {
						return fmt.Errorf("log %s lacks the printed line: %q, %v", logPath, b, err)
					}
					return nil
				},
			},
			{
				// Nothing changed: nothing to do, and no re-run.
				PreConfig: func() {
					// The new run of the step before was planned by the fast
					// path (createRunPlan), at plan and again at apply.
					if n := provider.FastCreatePlans() - fastCreates0; n < 2 {
						t.Fatalf("new run: the fast path answered %d create plans, want 2 (plan and apply)", n)
					}
					// ... and created by it (createRunApply).
					if n := provider.FastCreateApplies() - fastApplies0; n < 1 {
						t.Fatalf("new run: the fast path answered %d creates, want 1", n)
					}
					fastPlans0, fastReads0, fastUpgrades0, fastValidations0 = provider.FastPathHits()
				},
				Config: config("alice", "v1"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
			{
				// A file .amlignore excludes is not part of the run.
				PreConfig: func() {
					// The unchanged run of the step before was planned and
					// refreshed by the fast path (fastpath.go), not the framework.
					plans, reads, upgrades, validations := provider.FastPathHits()
					if plans == fastPlans0 || reads == fastReads0 || upgrades == fastUpgrades0 || validations == fastValidations0 {
						t.Fatalf("unchanged run: fast path answered %d plans, %d refreshes, %d state upgrades and %d validations, want at least one of each",
							plans-fastPlans0, reads-fastReads0, upgrades-fastUpgrades0, validations-fastValidations0)
					}
					testutil.WriteFiles(t, src, map[string]string{"ignored.txt": "scratch v2, now longer\n"})
				},
				Config: config("alice", "v1"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
			{
				// Tags update in place: same run, new tags in the store.
				Config: config("bob", "v1"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(res, plancheck.ResourceActionUpdate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("tags"), knownvalue.MapExact(map[string]knownvalue.Check{"owner": knownvalue.StringExact("bob")})),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("metrics").AtMapKey("accuracy"), knownvalue.Float64Exact(0.93)),
					sameRun.AddStateValue(res, tfjsonpath.New("run_id")),
				},
				Check: func(s *terraform.State) error {
					r, err := testEngine(t).ReadRun(t.Context(), wsDir+"/runs/"+firstRunID)
					if err != nil {
						return err
					}
					if r.Tags["owner"] != "bob" {
						return fmt.Errorf("stored run tags = %v, want owner=bob", r.Tags)
					}
					return checkRunCount(t, wsDir, 1)
				},
			},
			{
				// Editing the script replaces the run, which runs the new code.
				PreConfig: func() {
					testutil.WriteFiles(t, src, map[string]string{"train.py": envTrainScript("0.95")})
				},
				Config: config("bob", "v1"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(res, plancheck.ResourceActionReplace)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("metrics").AtMapKey("accuracy"), knownvalue.Float64Exact(0.95)),
					newRun.AddStateValue(res, tfjsonpath.New("run_id")),
					newSnapshot.AddStateValue(res, tfjsonpath.New("snapshot_hash")),
				},
			},
			{
				// Changing triggers forces a new run of the same code.
				Config: config("bob", "v2"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(res, plancheck.ResourceActionReplace)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("triggers"), knownvalue.MapExact(map[string]knownvalue.Check{"data_version": knownvalue.StringExact("v2")})),
					newRun.AddStateValue(res, tfjsonpath.New("run_id")),
				},
				// Replaced runs stay in the workspace as history.
				Check: func(s *terraform.State) error {
					if err := checkRunCount(t, wsDir, 3); err != nil {
						return err
					}
					r, err := testEngine(t).ReadRun(t.Context(), wsDir+"/runs/"+firstRunID)
					if err != nil {
						return fmt.Errorf("first run's record is gone: %w", err)
					}
					if r.Status != run.Completed {
						return fmt.Errorf("first run's record has status %s, want Completed", r.Status)
					}
					return nil
				},
			},
			{
				ResourceName:            res,
				ImportState:             true,
				ImportStateIdFunc:       importIDFromState(res),
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"wait_for_completion", "allow_failure", "timeouts"},
			},
			{
				ResourceName:  res,
				ImportState:   true,
				ImportStateId: "train_1732800000_1a2b3c4d",
				ExpectError:   wrapped("expecting {workspace_id}/runs/{run_id}"),
			},
		},
	})
}

func TestAccExperimentRunResource_failure(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{
		"fail.py": "import sys\nprint('starting')\nprint('boom', flush=True)\nsys.exit(3)\n",
	})
	config := func(allowFailure bool) string {
		return workspaceConfig(wsDir) + fmt.Sprintf(`
resource "aml_experiment_run" "fail" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "fail"
  source_directory     = %q
  script               = "fail.py"
  run_configuration_id = aml_run_configuration.py.id
  allow_failure        = %t
}
`, src, allowFailure)
	}
	const res = "aml_experiment_run.fail"

	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      config(false),
				ExpectError: wrappedAll("ended Failed (nonzero_exit, exit code 3)", "boom"),
			},
			{
				// The failed run was saved tainted, so this replaces it rather than
				// updating allow_failure in place.
				Config: config(true),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(res, plancheck.ResourceActionReplace)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("status"), knownvalue.StringExact("Failed")),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("failure_reason"), knownvalue.StringExact("nonzero_exit")),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("exit_code"), knownvalue.Int64Exact(3)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("log_tail"), knownvalue.StringRegexp(regexp.MustCompile(`(?m)^boom$`))),
				},
				Check: func(s *terraform.State) error { return checkRunCount(t, wsDir, 2) },
			},
			{
				// A failed run kept with allow_failure is stable: no re-run.
				Config: config(true),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
		},
	})
}

// sleeperScript writes its pid to outputs/pid.txt, then sleeps.
const sleeperScript = `import os
import time

with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "pid.txt"), "w") as f:
    f.write(str(os.getpid()))
print("sleeping", flush=True)
time.sleep(60)
`

// readPid waits for a run's script to write its pid.
func readPid(outputsDir string) (int, error) {
	var pid int
	err := testutil.Poll(20*time.Second, "the script to write pid.txt", func() (bool, error) {
		b, err := os.ReadFile(filepath.Join(outputsDir, "pid.txt"))
		if err != nil || len(b) == 0 {
			return false, nil
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil, err
	})
	return pid, err
}

func TestAccExperimentRunResource_cancelOnDestroy(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"sleep.py": sleeperScript})
	withRun := workspaceConfig(wsDir) + fmt.Sprintf(`
resource "aml_experiment_run" "sleep" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "sleep"
  source_directory     = %q
  script               = "sleep.py"
  run_configuration_id = aml_run_configuration.py.id
  wait_for_completion  = false
}
`, src)
	const res = "aml_experiment_run.sleep"
	var (
		id      string
		pid     int
		destroy time.Time
	)
	t.Cleanup(func() { killIfRunning(pid) })

	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: withRun,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("status"), knownvalue.StringRegexp(regexp.MustCompile(`^(Starting|Running)$`))),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("exit_code"), knownvalue.Null()),
				},
				Check: func(s *terraform.State) error {
					var err error
					if id, err = stateAttr(s, res, "id"); err != nil {
						return err
					}
					outputs, _ := stateAttr(s, res, "outputs_path")
					if pid, err = readPid(outputs); err != nil {
						return err
					}
					if testutil.ProcessGone(pid) {
						return fmt.Errorf("the run's script (pid %d) is not running", pid)
					}
					return nil
				},
			},
			{
				// Removing the resource cancels the run.
				PreConfig: func() { destroy = time.Now() },
				Config:    workspaceConfig(wsDir),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(res, plancheck.ResourceActionDestroy)},
				},
				Check: func(s *terraform.State) error {
					// SIGTERM stops the sleeping script at once; waiting out the
					// 10 s grace period would mean the cancel went wrong.
					if d := time.Since(destroy); d > 8*time.Second {
						return fmt.Errorf("destroying a running run took %s", d)
					}
					return checkCanceled(t, id, pid, run.ReasonCanceled)
				},
			},
		},
	})
}

func TestAccExperimentRunResource_createTimeout(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"sleep.py": sleeperScript})
	var started time.Time

	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				PreConfig: func() { started = time.Now() },
				Config: workspaceConfig(wsDir) + fmt.Sprintf(`
resource "aml_experiment_run" "sleep" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "sleep"
  source_directory     = %q
  script               = "sleep.py"
  run_configuration_id = aml_run_configuration.py.id
  timeouts = {
    create = "2s"
  }
}
`, src),
				ExpectError: wrappedAll("timed out waiting for run", "it was canceled", "ended Canceled (timed_out"),
			},
			{
				Config: workspaceConfig(wsDir),
				Check: func(s *terraform.State) error {
					if d := time.Since(started); d > 30*time.Second {
						return fmt.Errorf("a 2s create timeout took %s to give up", d)
					}
					dirs, err := runDirs(wsDir)
					if err != nil {
						return err
					}
					if len(dirs) != 1 {
						return fmt.Errorf("run directories %v, want exactly one", dirs)
					}
					pid, err := readPid(filepath.Join(wsDir, "runs", dirs[0], "outputs"))
					if err != nil {
						return err
					}
					t.Cleanup(func() { killIfRunning(pid) })
					return checkCanceled(t, wsDir+"/runs/"+dirs[0], pid, run.ReasonTimedOut)
				},
			},
		},
	})
}

// killIfRunning stops a run's script that a failed test left running.
func killIfRunning(pid int) {
	if pid > 0 && !testutil.ProcessGone(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// checkCanceled checks through the engine that a run's record is kept with
// status Canceled and the reason, and that its script's process is gone.
func checkCanceled(t *testing.T, id string, pid int, reason string) error {
	t.Helper()
	r, err := testEngine(t).ReadRun(t.Context(), id)
	if err != nil {
		return fmt.Errorf("run record %s: %w", id, err)
	}
	if r.Status != run.Canceled || r.FailureReason != reason {
		return fmt.Errorf("run %s has status %s (%s), want Canceled (%s)", id, r.Status, r.FailureReason, reason)
	}
	return testutil.Poll(5*time.Second, fmt.Sprintf("the script (pid %d) to exit", pid), func() (bool, error) {
		return testutil.ProcessGone(pid), nil
	})
}

func checkRunCount(t *testing.T, wsDir string, want int) error {
	t.Helper()
	n, err := workspaceRunCount(t, wsDir)
	if err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("workspace holds %d run record(s), want %d", n, want)
	}
	return nil
}

func checkAttr(s *terraform.State, address, attr, want string) error {
	got, err := stateAttr(s, address, attr)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s.%s = %q, want %q", address, attr, got, want)
	}
	return nil
}

// Every rejected run must leave nothing behind: no record, no run directory.
func TestAccExperimentRunResource_badInput(t *testing.T) {
	testAccPreCheck(t)
	root := t.TempDir()
	wsDir := filepath.Join(root, "ws")
	otherWS := filepath.Join(root, "other-ws")
	corruptWS := filepath.Join(root, "corrupt-ws")

	src := testutil.WriteFiles(t, filepath.Join(root, "src"), map[string]string{
		"train.py":   trainScript,
		"secret.py":  "print('never runs')\n",
		".amlignore": "secret.py\n",
	})
	linked := testutil.WriteFiles(t, filepath.Join(root, "linked"), map[string]string{"train.py": trainScript})
	testutil.WriteFiles(t, root, map[string]string{"outside.txt": "outside the source directory\n"})
	if err := os.Symlink("../outside.txt", filepath.Join(linked, "escape")); err != nil {
		t.Fatal(err)
	}
	big := testutil.WriteFiles(t, filepath.Join(root, "big"), map[string]string{
		"train.py": trainScript,
		"a.txt":    "a",
		"b.txt":    "b",
		"c.txt":    "c",
		"big.bin":  strings.Repeat("x", 64<<10),
	})

	// A workspace whose store is damaged, made without Terraform.
	func() {
		e := testEngine(t)
		if _, err := e.CreateWorkspace(t.Context(), engine.WorkspaceSpec{Name: "corrupt", StoragePath: corruptWS}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.PutRunConfig(t.Context(), corruptWS, engine.RunConfigSpec{Name: "py"}); err != nil {
			t.Fatal(err)
		}
		e.Close()
		if err := os.WriteFile(filepath.Join(corruptWS, "workspace.db"), []byte(strings.Repeat("not a database\n", 512)), 0o644); err != nil {
			t.Fatal(err)
		}
	}()

	base := workspaceConfig(wsDir) + fmt.Sprintf(`
resource "aml_run_configuration" "missing_python" {
  workspace_id = aml_workspace.ws.id
  name         = "missing-python"
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "/nonexistent/python"
    }
  }
}

resource "aml_workspace" "other" {
  name          = "other-ws"
  storage_path  = %q
  deletion_policy = "DELETE"
}

resource "aml_run_configuration" "other" {
  workspace_id = aml_workspace.other.id
  name         = "py"
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = %q
    }
  }
}
`, otherWS, pythonBin)
	// withRun adds a run; attrs override the defaults (a "-" value removes one).
	withRun := func(attrs map[string]string) string {
		all := map[string]string{
			"workspace_id":         "aml_workspace.ws.id",
			"experiment_name":      `"bad"`,
			"source_directory":     strconv.Quote(src),
			"script":               `"train.py"`,
			"run_configuration_id": "aml_run_configuration.py.id",
		}
		for k, v := range attrs {
			all[k] = v
		}
		var b strings.Builder
		b.WriteString(base + "\nresource \"aml_experiment_run\" \"bad\" {\n")
		for _, k := range []string{"workspace_id", "experiment_name", "source_directory", "script", "command", "arguments", "compute_target", "run_configuration_id"} {
			if v, ok := all[k]; ok && v != "-" {
				fmt.Fprintf(&b, "  %s = %s\n", k, v)
			}
		}
		b.WriteString("}\n")
		return b.String()
	}

	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: base},
			{
				Config:      withRun(map[string]string{"source_directory": "-"}),
				ExpectError: wrapped(`The argument "source_directory" is required`),
			},
			{
				Config:      withRun(map[string]string{"source_directory": strconv.Quote(filepath.Join(root, "nowhere"))}),
				ExpectError: wrappedAll("source_directory:", "nowhere does not exist"),
			},
			{
				Config:      withRun(map[string]string{"script": `"secret.py"`}),
				ExpectError: wrappedAll(`script: "secret.py" is not in the snapshot`, "excluded by .amlignore"),
			},
			{
				Config:      withRun(map[string]string{"script": `"missing.py"`}),
				ExpectError: wrapped(`script: "missing.py" is not in the snapshot`),
			},
			{
				Config:      withRun(map[string]string{"command": `["python3", "train.py"]`}),
				ExpectError: wrapped("2 attributes specified when one (and only one) of [script,command] is required"),
			},
			{
				Config:      withRun(map[string]string{"script": "-"}),
				ExpectError: wrapped("No attribute specified when one (and only one) of [script,command] is required"),
			},
			{
				Config:      withRun(map[string]string{"source_directory": strconv.Quote(linked)}),
				ExpectError: wrappedAll("source_directory:", "symlink escape -> ../outside.txt leaves the source directory"),
			},
			{
				Config:      "provider \"aml\" {\n  snapshot_max_files = 3\n}\n" + withRun(map[string]string{"source_directory": strconv.Quote(big)}),
				ExpectError: wrappedAll("source_directory:", "in 5 files, over the limit of", "/ 3 files; largest files: big.bin (64.0 KB), train.py"),
			},
			{
				Config:      withRun(map[string]string{"compute_target": `"gpu-cluster"`}),
				ExpectError: wrappedAll(`compute_target: unknown compute target "gpu-cluster"`, "local"),
			},
			{
				// Refused at plan: nothing is recorded (checkNoRuns below).
				Config:      withRun(map[string]string{"arguments": `["ok", "a\u0000b"]`}),
				ExpectError: wrappedAll("arguments[1]:", "contains a NUL byte"),
			},
			{
				Config:      withRun(map[string]string{"arguments": fmt.Sprintf("[%q]", strings.Repeat("x", 200<<10))}),
				ExpectError: wrappedAll("arguments[0]:", "MAX_ARG_STRLEN"),
			},
			{
				Config:      withRun(map[string]string{"run_configuration_id": "aml_run_configuration.other.id"}),
				ExpectError: wrappedAll("run_configuration_id:", "belongs to workspace", "not to this run's workspace"),
			},
			{
				Config:      withRun(map[string]string{"run_configuration_id": "aml_run_configuration.missing_python.id"}),
				ExpectError: wrappedAll("interpreter_path", `"/nonexistent/python" is not an executable file`),
			},
			{
				Config: withRun(map[string]string{
					"workspace_id":         strconv.Quote(corruptWS),
					"run_configuration_id": strconv.Quote(corruptWS + "/runconfigs/py"),
				}),
				ExpectError: wrappedAll("workspace_id:", "corrupt or not a SQLite database"),
			},
			{
				Config: base + `
data "aml_workspace" "ws" {
  storage_path = aml_workspace.ws.storage_path
}

data "aml_workspace" "other" {
  storage_path = aml_workspace.other.storage_path
}
`,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("data.aml_workspace.ws", tfjsonpath.New("run_count"), knownvalue.Int64Exact(0)),
					statecheck.ExpectKnownValue("data.aml_workspace.other", tfjsonpath.New("run_count"), knownvalue.Int64Exact(0)),
				},
				Check: func(s *terraform.State) error {
					for _, ws := range []string{wsDir, otherWS} {
						if err := checkNoRuns(t, ws); err != nil {
							return err
						}
					}
					if dirs, err := runDirs(corruptWS); err != nil || len(dirs) != 0 {
						return fmt.Errorf("corrupt workspace has run directories %v (%v)", dirs, err)
					}
					return nil
				},
			},
		},
	})
}

// The provider process is killed while a run it submitted is running; the next
// apply adopts that run instead of submitting it again. Terraform has to run the
// provider as a real plugin binary here, so this test drives the CLI itself.
func TestAccExperimentRunResource_adoptAfterProviderKilled(t *testing.T) {
	testAccPreCheck(t)
	t.Parallel()
	testAdoptionAfterProviderKilled(t, func(wsDir string) string { return workspaceConfig(wsDir) }, "run_configuration_id = aml_run_configuration.py.id", "", true)
}

// testAdoptionAfterProviderKilled kills the provider while a run of slow.py
// (prefixed by scriptHead) runs, configured by prelude (a workspace
// aml_workspace.ws at wsDir and what the run needs) and runAttrs, then checks
// that the next apply adopts that run.
func testAdoptionAfterProviderKilled(t *testing.T, prelude func(wsDir string) string, runAttrs, scriptHead string, local bool) {
	testAdoptionWithHook(t, prelude, runAttrs, scriptHead, local, nil)
}

// testAdoptionWithHook is testAdoptionAfterProviderKilled with afterKill
// called (when set) once the provider is dead and the run still going.
func testAdoptionWithHook(t *testing.T, prelude func(wsDir string) string, runAttrs, scriptHead string, local bool, afterKill func(wsDir, runID string)) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go toolchain not found on PATH; it is needed to build the provider binary")
	}
	tmp := t.TempDir()
	binDir := filepath.Join(tmp, "bin")
	bin := filepath.Join(binDir, "terraform-provider-aml")
	build := exec.Command(goBin, "build", "-o", bin, ".")
	build.Dir = filepath.Join("..", "..") // the module root, where main.go is
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the provider: %v\n%s", err, out)
	}

	cliConfig := filepath.Join(tmp, "terraformrc")
	testutil.WriteFiles(t, tmp, map[string]string{"terraformrc": fmt.Sprintf(`
provider_installation {
  dev_overrides {
    "openaml/aml" = %q
  }
  direct {}
}
`, binDir)})

	wsDir := filepath.Join(tmp, "ws")
	src := testutil.WriteFiles(t, filepath.Join(tmp, "src"), map[string]string{"slow.py": scriptHead + `import os
import time
import aml_run

print("started", flush=True)
time.sleep(globals().get("SLOW", 4))
aml_run.log("done", 1)
with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "model.txt"), "w") as f:
    f.write("weights")
print("finished", flush=True)
`})
	workDir := testutil.WriteFiles(t, filepath.Join(tmp, "tf"), map[string]string{"main.tf": `
terraform {
  required_providers {
    aml = {
      source = "openaml/aml"
    }
  }
}
` + prelude(wsDir) + fmt.Sprintf(`
resource "aml_experiment_run" "slow" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "slow"
  source_directory     = %q
  script               = "slow.py"
  %s
}

output "run_id" {
  value = aml_experiment_run.slow.run_id
}

output "status" {
  value = aml_experiment_run.slow.status
}
`, src, runAttrs)})

	tf := func(args ...string) *exec.Cmd {
		cmd := exec.Command(terraformBin, args...)
		cmd.Dir = workDir
		cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+cliConfig, "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1")
		// Its own process group, so the whole of it (terraform and the provider
		// plugin it starts) can be killed by one id.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		return cmd
	}
	// runTF runs terraform to the end, killing its process group after timeout.
	runTF := func(timeout time.Duration, args ...string) (string, error) {
		cmd := tf(args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			return "", err
		}
		// Wait reaps only terraform; the group goes down with it unless it hung.
		timer := time.AfterFunc(timeout, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
		err := cmd.Wait()
		timer.Stop()
		return out.String(), err
	}

	// First apply: killed once its run is running.
	first := tf("apply", "-auto-approve", "-input=false", "-no-color")
	var firstOut bytes.Buffer
	first.Stdout, first.Stderr = &firstOut, &firstOut
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	firstDone := false
	t.Cleanup(func() {
		if !firstDone { // still running: kill its group, then reap it
			_ = syscall.Kill(-first.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})

	var runID string
	err = testutil.Poll(90*time.Second, "the first apply to start its run", func() (bool, error) {
		select {
		case err := <-exited:
			firstDone = true
			return false, fmt.Errorf("terraform apply ended (%v) before its run started:\n%s", err, firstOut.String())
		default:
		}
		// The run is found in the store (a remote run's local directory
		// appears only when its results come back). Started means the record
		// has its handle: the status moved past NotStarted. Read as stored:
		// observing a remote run from here would stage this test binary on its
		// host first.
		id, st, err := storedRun(t, wsDir)
		if err != nil || id == "" {
			return false, nil // not committed yet
		}
		runID = id
		return st != run.NotStarted, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pids, err := providerPIDs(bin, first.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) == 0 {
		t.Fatalf("no provider process of %s found in terraform's process group %d (its processes: %v); the apply said:\n%s", bin, first.Process.Pid, groupProcesses(first.Process.Pid), firstOut.String())
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("killing the provider (pid %d): %v", pid, err)
		}
	}
	select {
	case err := <-exited:
		firstDone = true
		if err == nil {
			t.Fatalf("terraform apply succeeded although its provider was killed:\n%s", firstOut.String())
		}
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-first.Process.Pid, syscall.SIGKILL)
		<-exited
		firstDone = true
		t.Fatalf("terraform apply did not end after its provider was killed:\n%s", firstOut.String())
	}
	// The kill landed while the run was being created, not before or after.
	// Terraform reports a dead plugin as "Plugin did not respond" or, when the
	// connection drops first, as a cancelled request; both name the create call.
	died := wrappedAll("aml_experiment_run.slow: Creating...", "Plugin did not respond", "ApplyResourceChange")
	dropped := wrappedAll("aml_experiment_run.slow: Creating...", "Request cancelled", "ApplyResourceChange request was cancelled")
	if out := firstOut.String(); !died.MatchString(out) && !dropped.MatchString(out) {
		t.Fatalf("the first apply did not fail on the killed provider during the run's create:\n%s", firstOut.String())
	}
	// Nothing recorded its end: the run goes on without the provider (the
	// second apply below adopts it and sees it complete). A local run is
	// observed from here too; a remote one is not (this test's own engine
	// would first stage its test binary on the host).
	if st, err := storedStatus(t, wsDir, runID); err != nil || st.Terminal() {
		t.Fatalf("the run should still be going after the provider died: %s, %v", st, err)
	}
	if local {
		if r, err := testEngine(t).ReadRun(t.Context(), wsDir+"/runs/"+runID); err != nil || r.Status.Terminal() {
			t.Fatalf("the run should still be going after the provider died: %+v, %v", r, err)
		}
	}

	if afterKill != nil {
		afterKill(wsDir, runID)
	}

	// Second apply: adopts the run.
	out, err := runTF(2*time.Minute, "apply", "-auto-approve", "-input=false", "-no-color")
	if err != nil {
		t.Fatalf("second apply failed: %v\n%s", err, out)
	}
	if !wrapped("Adopted an earlier run").MatchString(out) {
		t.Errorf("second apply did not report the adoption:\n%s", out)
	}
	outJSON, err := runTF(time.Minute, "output", "-json")
	if err != nil {
		t.Fatalf("terraform output: %v\n%s", err, outJSON)
	}
	var outputs map[string]struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal([]byte(outJSON), &outputs); err != nil {
		t.Fatalf("terraform output -json: %v\n%s", err, outJSON)
	}
	if got := outputs["run_id"].Value; got != runID {
		t.Errorf("state run_id = %q, want the run the killed apply started, %q", got, runID)
	}
	if got := outputs["status"].Value; got != "Completed" {
		t.Errorf("state status = %q, want Completed", got)
	}
	if dirs, err := runDirs(wsDir); err != nil || len(dirs) != 1 {
		t.Errorf("run directories %v (%v), want only %s", dirs, err, runID)
	}
	if err := checkRunCount(t, wsDir, 1); err != nil {
		t.Error(err)
	}
	r, err := testEngine(t).ReadRun(t.Context(), wsDir+"/runs/"+runID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != run.Completed || r.Metrics["done"] != 1 {
		t.Errorf("adopted run: status %s metrics %v, want Completed with done=1", r.Status, r.Metrics)
	}

	if out, err := runTF(2*time.Minute, "destroy", "-auto-approve", "-input=false", "-no-color"); err != nil {
		t.Fatalf("destroy failed: %v\n%s", err, out)
	}
	if _, err := os.Stat(wsDir); !os.IsNotExist(err) {
		t.Errorf("workspace %s still exists after destroy (force_destroy = true): %v", wsDir, err)
	}
}

// storedRun returns the one active run of a workspace and its status, as
// stored (observing nothing).
func storedRun(t *testing.T, wsDir string) (string, run.Status, error) {
	s, err := store.Open(t.Context(), wsDir)
	if err != nil {
		return "", "", err
	}
	defer s.Close()
	ids, err := s.ActiveRunIDs(t.Context())
	if err != nil || len(ids) == 0 {
		return "", "", err
	}
	rec, err := s.GetRun(t.Context(), ids[0])
	if err != nil {
		return "", "", err
	}
	return rec.ID, rec.Status, nil
}

// storedStatus reads a run's status from its workspace store, observing nothing.
func storedStatus(t *testing.T, wsDir, runID string) (run.Status, error) {
	s, err := store.Open(t.Context(), wsDir)
	if err != nil {
		return "", err
	}
	defer s.Close()
	rec, err := s.GetRun(t.Context(), runID)
	if err != nil {
		return "", err
	}
	return rec.Status, nil
}

// groupProcesses lists "pid:exe" of process group pgid (for diagnostics).
func groupProcesses(pgid int) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			out = append(out, fmt.Sprintf("%d:%s", pid, exe))
		}
	}
	return out
}

// providerPIDs finds the provider plugin processes of bin in process group pgid
// (run supervisors run the same binary as `agent ...`, in sessions of their own).
func providerPIDs(bin string, pgid int) ([]int, error) {
	want, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || exe != want {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || strings.Contains(string(cmdline), "agent") {
			continue
		}
		if g, err := syscall.Getpgid(pid); err != nil || g != pgid {
			continue
		}
		pids = append(pids, pid)
	}
	return pids, nil
}
