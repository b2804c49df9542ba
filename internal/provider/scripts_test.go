package provider_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/compare"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/openaml/terraform-provider-aml/internal/testutil/wheel"
)

// v1TrainScript is a training script in the seed's (Azure ML SDK v1) style.
const v1TrainScript = `from azureml.core import Run

run = Run.get_context()
print("run", run.id, "of experiment", run.experiment.name)
for epoch, loss in enumerate([0.8, 0.4, 0.2]):
    run.log("loss", loss)
run.log("accuracy", 0.93)
run.log_list("val_loss", [0.9, 0.5])
run.log_row("roc", fpr=0.1, tpr=0.7)
run.tag("model", "logreg")
with open("model.pkl", "w") as f:
    f.write("weights")
run.upload_file("outputs/model.pkl", "model.pkl")
`

func TestAccExperimentRun_azuremlV1Script(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": v1TrainScript})
	const res, ds = "aml_experiment_run.v1", "data.aml_run.v1"
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: workspaceConfig(wsDir) + fmt.Sprintf(`
resource "aml_experiment_run" "v1" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "v1style"
  source_directory     = %q
  script               = "train.py"
  run_configuration_id = aml_run_configuration.py.id
}

data "aml_run" "v1" {
  workspace_id = aml_workspace.ws.id
  run_id       = aml_experiment_run.v1.run_id
}
`, src),
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue(res, tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
				statecheck.ExpectKnownValue(res, tfjsonpath.New("metrics"), knownvalue.MapExact(map[string]knownvalue.Check{
					"loss": knownvalue.Float64Exact(0.2), "accuracy": knownvalue.Float64Exact(0.93), "val_loss": knownvalue.Float64Exact(0.5),
					"roc/fpr": knownvalue.Float64Exact(0.1), "roc/tpr": knownvalue.Float64Exact(0.7),
				})),
				statecheck.ExpectKnownValue(res, tfjsonpath.New("script_tags"), knownvalue.MapExact(map[string]knownvalue.Check{"model": knownvalue.StringExact("logreg")})),
				statecheck.ExpectKnownValue(res, tfjsonpath.New("output_files"), knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("model.pkl")})),
				statecheck.ExpectKnownValue(res, tfjsonpath.New("log_tail"), knownvalue.StringRegexp(wrapped("of experiment v1style"))),
				// Every value, in order, with the steps log_list gave.
				statecheck.ExpectKnownValue(ds, tfjsonpath.New("metric_history").AtSliceIndex(0).AtMapKey("name"), knownvalue.StringExact("loss")),
				statecheck.ExpectKnownValue(ds, tfjsonpath.New("metric_history").AtSliceIndex(0).AtMapKey("value"), knownvalue.Float64Exact(0.8)),
				statecheck.ExpectKnownValue(ds, tfjsonpath.New("metric_history").AtSliceIndex(0).AtMapKey("step"), knownvalue.Null()),
				statecheck.ExpectKnownValue(ds, tfjsonpath.New("metric_history").AtSliceIndex(0).AtMapKey("time"), knownvalue.StringRegexp(rfc3339Pattern)),
				statecheck.ExpectKnownValue(ds, tfjsonpath.New("metric_history").AtSliceIndex(2).AtMapKey("value"), knownvalue.Float64Exact(0.2)),
				statecheck.ExpectKnownValue(ds, tfjsonpath.New("metric_history").AtSliceIndex(5).AtMapKey("name"), knownvalue.StringExact("val_loss")),
				statecheck.ExpectKnownValue(ds, tfjsonpath.New("metric_history").AtSliceIndex(5).AtMapKey("step"), knownvalue.Float64Exact(1)),
				statecheck.ExpectKnownValue(ds, tfjsonpath.New("metric_history"), knownvalue.ListSizeExact(8)),
				statecheck.ExpectKnownValue(ds, tfjsonpath.New("script_tags"), knownvalue.MapExact(map[string]knownvalue.Check{"model": knownvalue.StringExact("logreg")})),
			},
		}},
	})
}

// mlflowScript logs with real MLflow and configures no tracking of its own.
const mlflowTrainScript = `import time
import mlflow

mlflow.log_param("C", 0.5)
mlflow.log_param("solver", "lbfgs")
mlflow.set_tag("team", "vision")
for step, loss in enumerate([0.7, 0.3, 0.1]):
    mlflow.log_metric("loss", loss, step=step)
# MLflow's file store times values to the millisecond, one file per metric:
# values of two metrics logged in the same millisecond have no order.
time.sleep(0.01)
mlflow.log_metrics({"accuracy": 0.95})
with open("confusion.txt", "w") as f:
    f.write("[[9, 1], [0, 10]]")
mlflow.log_artifact("confusion.txt", artifact_path="eval")
`

func TestAccExperimentRun_mlflow(t *testing.T) {
	testAccPreCheck(t)
	wheels := wheel.Real(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": mlflowTrainScript})
	const res = "aml_experiment_run.mlflow"
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name            = "acc-mlflow"
  storage_path    = %q
  deletion_policy = "DELETE"
}

resource "aml_run_configuration" "mlflow" {
  workspace_id = aml_workspace.ws.id
  name         = "mlflow"
  environment {
    python {
      user_managed_dependencies = false
      conda_dependencies {
        pip_packages = [%q]
        pip_options {
          find_links = [%q]
          no_index   = true
        }
      }
    }
  }
}

resource "aml_experiment_run" "mlflow" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "mlflow"
  source_directory     = %q
  script               = "train.py"
  run_configuration_id = aml_run_configuration.mlflow.id
  timeouts = {
    create = "10m"
  }
}

data "aml_run" "mlflow" {
  workspace_id = aml_workspace.ws.id
  run_id       = aml_experiment_run.mlflow.run_id
}
`, wsDir, wheel.MLflowSkinny, wheels, src),
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue(res, tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
				statecheck.ExpectKnownValue(res, tfjsonpath.New("environment_cache_hit"), knownvalue.Bool(false)),
				statecheck.ExpectKnownValue(res, tfjsonpath.New("metrics"), knownvalue.MapExact(map[string]knownvalue.Check{
					"loss": knownvalue.Float64Exact(0.1), "accuracy": knownvalue.Float64Exact(0.95),
				})),
				statecheck.ExpectKnownValue(res, tfjsonpath.New("params"), knownvalue.MapExact(map[string]knownvalue.Check{
					"C": knownvalue.StringExact("0.5"), "solver": knownvalue.StringExact("lbfgs"),
				})),
				statecheck.ExpectKnownValue(res, tfjsonpath.New("script_tags"), knownvalue.MapExact(map[string]knownvalue.Check{"team": knownvalue.StringExact("vision")})),
				statecheck.ExpectKnownValue(res, tfjsonpath.New("output_files"), knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("eval/confusion.txt")})),
				statecheck.ExpectKnownValue("data.aml_run.mlflow", tfjsonpath.New("metric_history"), knownvalue.ListExact([]knownvalue.Check{
					metricValue("loss", 0.7, 0), metricValue("loss", 0.3, 1), metricValue("loss", 0.1, 2), metricValue("accuracy", 0.95, 0),
				})),
				statecheck.ExpectKnownValue("data.aml_run.mlflow", tfjsonpath.New("params"), knownvalue.MapSizeExact(2)),
			},
		}},
	})
}

var rfc3339Pattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$`)

func metricValue(name string, value, step float64) knownvalue.Check {
	return knownvalue.ObjectExact(map[string]knownvalue.Check{
		"name": knownvalue.StringExact(name), "value": knownvalue.Float64Exact(value),
		"step": knownvalue.Float64Exact(step), "time": knownvalue.StringRegexp(rfc3339Pattern),
	})
}

// sweepScript's accuracy peaks at lr = 0.1.
const sweepScript = `import sys, aml_run
lr = float(sys.argv[1])
aml_run.log("accuracy", round(1 - abs(lr - 0.1), 4))
aml_run.tag("lr", sys.argv[1])
`

func sweepConfig(wsDir, src, extra string) string {
	return workspaceConfig(wsDir) + fmt.Sprintf(`
locals {
  # (for_each works the same; terraform-plugin-testing's state checks take count.)
  lrs = ["0.01", "0.1", "0.5"]
}

resource "aml_experiment_run" "sweep" {
  count                = length(local.lrs)
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "sweep"
  source_directory     = %q
  script               = "train.py"
  arguments            = [local.lrs[count.index]]
  run_configuration_id = aml_run_configuration.py.id
  tags                 = { sweep = "lr" }
}

resource "aml_experiment_run" "other" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "other"
  source_directory     = %q
  script               = "train.py"
  arguments            = ["0.1"]
  run_configuration_id = aml_run_configuration.py.id
}

data "aml_runs" "sweep" {
  workspace_id    = aml_workspace.ws.id
  experiment_name = "sweep"
  statuses        = ["Completed"]
  tags            = { sweep = "lr" }
  order_by        = "metric:accuracy"
  descending      = true
  depends_on      = [aml_experiment_run.sweep, aml_experiment_run.other]
}

locals {
  best = data.aml_runs.sweep.runs[0]
  # The same pick without order_by: the run with the largest accuracy.
  best_accuracy = max([for r in data.aml_runs.sweep.runs : r.metrics["accuracy"]]...)
}

output "best_is_lr_0_1" { value = local.best.run_id == aml_experiment_run.sweep[1].run_id }
output "best_lr"       { value = local.best.script_tags["lr"] }
output "best_accuracy" { value = local.best_accuracy }
%s
`, src, src, extra)
}

func TestAccRunsDataSource_sweep(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": sweepScript})
	const ds = "data.aml_runs.sweep"
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: sweepConfig(wsDir, src, ""),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("runs"), knownvalue.ListSizeExact(3)),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("runs").AtSliceIndex(0).AtMapKey("metrics").AtMapKey("accuracy"), knownvalue.Float64Exact(1)),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("runs").AtSliceIndex(1).AtMapKey("metrics").AtMapKey("accuracy"), knownvalue.Float64Exact(0.91)),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("runs").AtSliceIndex(2).AtMapKey("metrics").AtMapKey("accuracy"), knownvalue.Float64Exact(0.6)),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("runs").AtSliceIndex(0).AtMapKey("experiment_name"), knownvalue.StringExact("sweep")),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("runs").AtSliceIndex(0).AtMapKey("tags"), knownvalue.MapExact(map[string]knownvalue.Check{"sweep": knownvalue.StringExact("lr")})),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("run_ids"), knownvalue.ListSizeExact(3)),
					statecheck.ExpectKnownOutputValue("best_is_lr_0_1", knownvalue.Bool(true)),
					statecheck.CompareValuePairs(ds, tfjsonpath.New("runs").AtSliceIndex(0).AtMapKey("run_id"), ds, tfjsonpath.New("run_ids").AtSliceIndex(0), compare.ValuesSame()),
					statecheck.ExpectKnownOutputValue("best_lr", knownvalue.StringExact("0.1")),
					statecheck.ExpectKnownOutputValue("best_accuracy", knownvalue.Float64Exact(1)),
				},
			},
			{
				Config: sweepConfig(wsDir, src, `
data "aml_runs" "bad" {
  workspace_id = aml_workspace.ws.id
  statuses     = ["Done"]
}`),
				ExpectError: wrappedAll("statuses", `value must be one of`, `"Completed"`, `got: "Done"`),
			},
			{
				Config: sweepConfig(wsDir, src, `
data "aml_runs" "bad" {
  workspace_id = aml_workspace.ws.id
  order_by     = "best"
}`),
				ExpectError: wrappedAll("order_by", "must be created, start_time, end_time or metric:<name>", `got: best`),
			},
			{
				// Other filters: a target, a script tag, a status nothing has, a limit.
				Config: sweepConfig(wsDir, src, `
data "aml_runs" "all" {
  workspace_id = aml_workspace.ws.id
  depends_on   = [aml_experiment_run.sweep, aml_experiment_run.other]
}
data "aml_runs" "by_script_tag" {
  workspace_id   = aml_workspace.ws.id
  compute_target = "local"
  tags           = { lr = "0.5" }
  depends_on     = [aml_experiment_run.sweep]
}
data "aml_runs" "failed" {
  workspace_id = aml_workspace.ws.id
  statuses     = ["Failed", "Canceled"]
}
data "aml_runs" "newest" {
  workspace_id = aml_workspace.ws.id
  descending   = true
  limit        = 1
  depends_on   = [aml_experiment_run.sweep, aml_experiment_run.other]
}
data "aml_runs" "elsewhere" {
  workspace_id   = aml_workspace.ws.id
  compute_target = "gpu-box"
}
`),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("data.aml_runs.all", tfjsonpath.New("runs"), knownvalue.ListSizeExact(4)),
					statecheck.ExpectKnownValue("data.aml_runs.by_script_tag", tfjsonpath.New("runs"), knownvalue.ListSizeExact(1)),
					statecheck.ExpectKnownValue("data.aml_runs.by_script_tag", tfjsonpath.New("runs").AtSliceIndex(0).AtMapKey("metrics").AtMapKey("accuracy"), knownvalue.Float64Exact(0.6)),
					statecheck.ExpectKnownValue("data.aml_runs.failed", tfjsonpath.New("runs"), knownvalue.ListSizeExact(0)),
					statecheck.ExpectKnownValue("data.aml_runs.newest", tfjsonpath.New("runs"), knownvalue.ListSizeExact(1)),
					statecheck.ExpectKnownValue("data.aml_runs.elsewhere", tfjsonpath.New("runs"), knownvalue.ListSizeExact(0)),
				},
			},
		},
	})
}

func TestAccExperimentRun_snapshotChanges(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": trainScript, "old.py": "x = 1\n", "data/input.csv": "a,b\n", "notes.tmp": "ignored\n", ".amlignore": "*.tmp\n"})
	const res = "aml_experiment_run.train"
	config := func(tag, arg string) string {
		return workspaceConfig(wsDir) + fmt.Sprintf(`
resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "changes"
  source_directory     = %q
  script               = "train.py"
  arguments            = [%q]
  run_configuration_id = aml_run_configuration.py.id
  tags                 = { note = %q }
}
`, src, arg, tag)
	}
	changes := func(want ...string) knownvalue.Check {
		checks := []knownvalue.Check{}
		for _, w := range want {
			checks = append(checks, knownvalue.StringExact(w))
		}
		return knownvalue.ListExact(checks)
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				// The workspace is created by this plan: known at apply.
				Config: config("a", "1"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectUnknownValue(res, tfjsonpath.New("snapshot_changes")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("snapshot_changes"), changes()),
				},
			},
			{
				// Edit one file, add one, remove one, touch an ignored one.
				PreConfig: func() {
					write("train.py", trainScript+"# tuned\n")
					write("new.py", "y = 2\n")
					write("notes.tmp", "still ignored\n")
					if err := os.Remove(filepath.Join(src, "old.py")); err != nil {
						t.Fatal(err)
					}
				},
				Config: config("a", "1"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(res, plancheck.ResourceActionReplace),
					plancheck.ExpectKnownValue(res, tfjsonpath.New("snapshot_changes"), changes("added: new.py", "removed: old.py", "changed: train.py")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("snapshot_changes"), changes("added: new.py", "removed: old.py", "changed: train.py")),
				},
			},
			{
				// Nothing changed: an empty plan.
				Config:           config("a", "1"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}},
			},
			{
				// A tag updates in place; the list stays what it was.
				Config: config("b", "1"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(res, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(res, tfjsonpath.New("snapshot_changes"), changes("added: new.py", "removed: old.py", "changed: train.py")),
				}},
			},
			{
				// Another input re-runs it with the same files: no file changed.
				Config: config("b", "2"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(res, plancheck.ResourceActionReplace),
					plancheck.ExpectKnownValue(res, tfjsonpath.New("snapshot_changes"), changes()),
				}},
			},
			{
				Config:             config("b", "2"),
				ConfigPlanChecks:   resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}},
				ExpectNonEmptyPlan: false,
			},
		},
	})
}
