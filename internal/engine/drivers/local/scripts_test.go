package local_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/testutil/wheel"
)

// A training script written for Azure ML SDK v1 runs unchanged: the run's
// Python has no azureml-core, so it gets the provider's azureml.core.
const v1Script = `import os, sys
from azureml.core import Run
from azureml.core.run import Run as SameRun
assert Run is SameRun

run = Run.get_context()
print("run id", run.id, "experiment", run.experiment.name)
assert run.id == os.environ["AML_RUN_ID"], run.id
run.log("accuracy", 0.5)
run.log("accuracy", 0.93, description="final")
run.log_list("loss", [0.9, 0.5, 0.25])
run.log_row("roc", fpr=0.0, tpr=0.0)
run.log_row("roc", fpr=0.5, tpr=0.9)
run.log_table("pr", {"precision": [1.0, 0.8], "recall": [0.1, 0.6]})
run.log("bad", float("nan"))
run.tag("framework", "sklearn")
run.set_tags({"stage": "dev", "owner": "alice"})
with open("model.pkl", "w") as f:
    f.write("model")
run.upload_file("outputs/model.pkl", "model.pkl")
run.upload_file("extra/notes.txt", "model.pkl")
os.makedirs("plots/sub", exist_ok=True)
open("plots/a.png", "w").write("png")
open("plots/sub/b.png", "w").write("png")
run.upload_folder("plots", "plots")
run.complete()
try:
    from azureml.core import Workspace
    Workspace.from_config()
except RuntimeError as e:
    print("workspace:", e)
print("azureml.core from", sys.modules["azureml.core"].__file__)
`

func TestAzuremlV1Script(t *testing.T) {
	f := newFixture(t, map[string]string{"train.py": v1Script})
	f.experiment = "iris"
	runDir, ex := f.start(t, []string{"python3", "train.py"}, nil, 0, time.Second)
	st := wait(t, ex, 30*time.Second)
	col, err := ex.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != run.Completed {
		t.Fatalf("state = %+v\n%s", st, col.LogTail)
	}
	id := filepath.Base(runDir)
	for _, want := range []string{"run id " + id + " experiment iris", "workspace: azureml.core.Workspace is not available",
		"azureml.core from " + filepath.Join(runDir, ".aml", "lib.zip", "azureml", "core", "__init__.py")} {
		if !strings.Contains(col.LogTail, want) {
			t.Errorf("log lacks %q:\n%s", want, col.LogTail)
		}
	}
	last := run.LastValues(col.Metrics)
	want := map[string]float64{"accuracy": 0.93, "loss": 0.25, "roc/fpr": 0.5, "roc/tpr": 0.9, "pr/precision": 0.8, "pr/recall": 0.6}
	for k, v := range want {
		if last[k] != v {
			t.Errorf("metric %s = %v, want %v (all: %v)", k, last[k], v, last)
		}
	}
	if _, ok := last["bad"]; ok || len(last) != len(want) {
		t.Errorf("metrics = %v", last)
	}
	var steps []float64
	for _, m := range col.Metrics {
		if m.Name == "loss" {
			steps = append(steps, *m.Step)
		}
		if m.Time == 0 {
			t.Errorf("metric %s has no time", m.Name)
		}
	}
	if !slices.Equal(steps, []float64{0, 1, 2}) {
		t.Errorf("loss steps = %v", steps)
	}
	if col.Tags["framework"] != "sklearn" || col.Tags["stage"] != "dev" || col.Tags["owner"] != "alice" || len(col.Tags) != 3 {
		t.Errorf("tags = %v", col.Tags)
	}
	if !slices.Equal(col.OutputFiles, []string{"extra/notes.txt", "model.pkl", "plots/a.png", "plots/sub/b.png"}) {
		t.Errorf("outputs = %v", col.OutputFiles)
	}
}

// venv makes a virtual environment with packages installed offline from the
// real wheels scripts/install-pywheels.sh downloads.
func venv(t *testing.T, args ...string) string {
	t.Helper()
	wheels := wheel.Real(t)
	uv, err := exec.LookPath("uv")
	if err != nil {
		t.Skip("no uv on PATH (scripts/install-tools.sh installs it)")
	}
	dir := filepath.Join(t.TempDir(), "venv")
	if out, err := exec.Command(uv, "venv", "--quiet", "--python", "python3", dir).CombinedOutput(); err != nil {
		t.Fatalf("uv venv: %v\n%s", err, out)
	}
	cmd := exec.Command(uv, append([]string{"pip", "install", "--quiet", "--no-index", "--find-links", wheels, "--python", filepath.Join(dir, "bin", "python")}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("uv pip install %v: %v\n%s", args, err, out)
	}
	return filepath.Join(dir, "bin", "python")
}

// A real azureml-core installed in the run's Python is the one a script
// imports, never the provider's stand-in. (Installed with --no-deps: its
// dependencies are large, and finding the module is what is tested.)
func TestAzuremlRealInstallNotShadowed(t *testing.T) {
	py := venv(t, "--no-deps", wheel.AzuremlCore)
	f := newFixture(t, map[string]string{"probe.py": `import importlib.util, azureml
spec = importlib.util.find_spec("azureml.core")
print("origin", spec.origin)
`})
	_, ex := f.start(t, []string{py, "probe.py"}, nil, 0, time.Second)
	st := wait(t, ex, 30*time.Second)
	col, _ := ex.Collect(context.Background())
	if st.Status != run.Completed {
		t.Fatalf("state = %+v\n%s", st, col.LogTail)
	}
	site := filepath.Join(filepath.Dir(filepath.Dir(py)), "lib")
	if !strings.Contains(col.LogTail, "origin "+site) || !strings.Contains(col.LogTail, filepath.Join("site-packages", "azureml", "core", "__init__.py")) {
		t.Errorf("azureml.core did not come from the installed azureml-core in %s:\n%s", site, col.LogTail)
	}
}

const mlflowScript = `import os, mlflow
print("tracking", mlflow.get_tracking_uri())
mlflow.log_param("C", 1.0)
mlflow.log_params({"solver": "lbfgs", "nested/param": "x"})
mlflow.set_tag("team", "vision")
mlflow.set_tags({"mlflow.note.content": "system tag, not kept"})
for step, loss in enumerate([0.9, 0.4, 0.2]):
    mlflow.log_metric("loss", loss, step=step)
mlflow.log_metrics({"accuracy": 0.91, "f1/macro": 0.88})
os.makedirs("work", exist_ok=True)
open("work/model.txt", "w").write("weights")
mlflow.log_artifact("work/model.txt")
mlflow.log_artifact("work/model.txt", artifact_path="ckpt")
mlflow.end_run()
`

// A script that logs with real MLflow (mlflow-skinny, whose own default store
// needs SQLAlchemy and crashes) and configures no tracking of its own has its
// metrics, history, params, tags and artifacts in the run.
func TestMLflowScript(t *testing.T) {
	py := venv(t, wheel.MLflowSkinny)
	f := newFixture(t, map[string]string{"train.py": mlflowScript})
	f.experiment = "mnist"
	runDir, ex := f.start(t, []string{py, "train.py"}, nil, 0, time.Second)
	st := wait(t, ex, 120*time.Second)
	col, err := ex.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != run.Completed {
		t.Fatalf("state = %+v\n%s", st, col.LogTail)
	}
	if !strings.Contains(col.LogTail, "tracking file://"+filepath.Join(runDir, ".aml", "mlruns")) {
		t.Errorf("tracking URI not the run's store:\n%s", col.LogTail)
	}
	last := run.LastValues(col.Metrics)
	if last["loss"] != 0.2 || last["accuracy"] != 0.91 || last["f1/macro"] != 0.88 || len(last) != 3 {
		t.Errorf("metrics = %v", last)
	}
	var hist []float64
	for _, m := range col.Metrics {
		if m.Name == "loss" {
			hist = append(hist, m.Value)
			if m.Step == nil || m.Time < float64(time.Now().Add(-time.Hour).Unix()) {
				t.Errorf("loss value without step or time: %+v", m)
			}
		}
	}
	if !slices.Equal(hist, []float64{0.9, 0.4, 0.2}) {
		t.Errorf("loss history = %v", hist)
	}
	if col.Params["C"] != "1.0" || col.Params["solver"] != "lbfgs" || col.Params["nested/param"] != "x" || len(col.Params) != 3 {
		t.Errorf("params = %v", col.Params)
	}
	if col.Tags["team"] != "vision" || len(col.Tags) != 1 {
		t.Errorf("tags = %v", col.Tags)
	}
	if !slices.Equal(col.OutputFiles, []string{"ckpt/model.txt", "model.txt"}) {
		t.Errorf("outputs = %v (warnings %v)", col.OutputFiles, col.Warnings)
	}
	if len(col.Warnings) > 0 {
		t.Errorf("warnings: %v", col.Warnings)
	}
	// The experiment is the run's (MLFLOW_EXPERIMENT_NAME).
	metas, _ := filepath.Glob(filepath.Join(runDir, ".aml", "mlruns", "*", "meta.yaml"))
	found := false
	for _, m := range metas {
		b, _ := os.ReadFile(m)
		found = found || strings.Contains(string(b), "name: mnist")
	}
	if !found {
		t.Errorf("no MLflow experiment named mnist in %v", metas)
	}
}

// A script whose environment names its own tracking keeps it: nothing is
// collected from it, and MLflow writes where the script said.
func TestMLflowOwnTrackingLeftAlone(t *testing.T) {
	py := venv(t, wheel.MLflowSkinny)
	f := newFixture(t, map[string]string{"train.py": `import mlflow
print("tracking", mlflow.get_tracking_uri())
mlflow.log_metric("loss", 0.5)
`})
	own := filepath.Join(t.TempDir(), "own")
	_, ex := f.start(t, []string{py, "train.py"}, map[string]string{"MLFLOW_TRACKING_URI": "file://" + own, "MLFLOW_ALLOW_FILE_STORE": "true"}, 0, time.Second)
	st := wait(t, ex, 120*time.Second)
	col, _ := ex.Collect(context.Background())
	if st.Status != run.Completed {
		t.Fatalf("state = %+v\n%s", st, col.LogTail)
	}
	if !strings.Contains(col.LogTail, "tracking file://"+own) || len(col.Metrics) != 0 {
		t.Errorf("metrics %v; log:\n%s", col.Metrics, col.LogTail)
	}
	if m, _ := filepath.Glob(filepath.Join(own, "*", "*", "metrics", "loss")); len(m) != 1 {
		t.Errorf("the script's own store has no loss metric: %v", m)
	}
}
