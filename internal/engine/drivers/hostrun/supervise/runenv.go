package supervise

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// RunVars are the variables every run gets from the host runtime, whatever the
// target: where its outputs, logs and metrics go.
func RunVars(runID string, l Layout) map[string]string {
	return map[string]string{
		"AML_RUN_ID":       runID,
		"AML_OUTPUTS_DIR":  l.Outputs(),
		"AML_LOGS_DIR":     l.Logs(),
		"AML_METRICS_FILE": l.Metrics(),
		"AML_TAGS_FILE":    l.Tags(),
		"PYTHONUNBUFFERED": "1",
	}
}

// runVars are RunVars with the experiment's name, for scripts (azureml's
// Run.experiment.name).
func RunVarsFor(runID, experiment string, l Layout) map[string]string {
	vars := RunVars(runID, l)
	if experiment != "" {
		vars["AML_EXPERIMENT_NAME"] = experiment
	}
	return vars
}

// MLflowVars point MLflow at a file store inside the run directory, read when
// the run is collected. They are defaults: a run whose environment sets
// MLFLOW_TRACKING_URI keeps its own tracking (and none of these). MLflow 3
// refuses a file store without MLFLOW_ALLOW_FILE_STORE, and its own default
// (sqlite:///mlflow.db) fails without SQLAlchemy, as with mlflow-skinny.
func MLflowVars(l Layout, experiment string) map[string]string {
	vars := map[string]string{
		"MLFLOW_TRACKING_URI":     (&url.URL{Scheme: "file", Path: filepath.ToSlash(l.MLflowStore())}).String(),
		"MLFLOW_ALLOW_FILE_STORE": "true",
	}
	if experiment != "" {
		vars["MLFLOW_EXPERIMENT_NAME"] = experiment
	}
	return vars
}

// withDefaults adds defaults to a run's variables unless the run already sets
// MLFLOW_TRACKING_URI (then its MLflow configuration is left as it is).
func withDefaults(m, defaults map[string]string) {
	if _, own := m["MLFLOW_TRACKING_URI"]; own {
		return
	}
	for k, v := range defaults {
		if _, set := m[k]; !set {
			m[k] = v
		}
	}
}

// RunEnvironment builds a run's environment: the base (minus the plugin protocol's
// variables), then the user's variables, then the engine's, with helperLib first on
// PYTHONPATH. defaults (MLflowVars) fill in what neither the base nor the user
// set (see withDefaults).
func RunEnvironment(base []string, user, engine, defaults map[string]string, helperLib string) []string {
	m := map[string]string{}
	quieted := false
	for _, kv := range base {
		if kv == QuietLogMarker+"=1" {
			quieted = true
		}
	}
	for _, kv := range base {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || isPluginVar(k) || (quieted && isQuietLogVar(k)) {
			continue
		}
		m[k] = v
	}
	for k, v := range user {
		m[k] = v
	}
	withDefaults(m, defaults)
	for k, v := range engine {
		m[k] = v
	}
	if helperLib != "" {
		if pp := m["PYTHONPATH"]; pp != "" {
			m["PYTHONPATH"] = helperLib + string(os.PathListSeparator) + pp
		} else {
			m["PYTHONPATH"] = helperLib
		}
	}
	out := make([]string, 0, len(m))
	for _, k := range run.SortedKeys(m) {
		out = append(out, k+"="+m[k])
	}
	return out
}

// QuietLogMarker is "1" in the provider's environment when the provider set
// QuietLogVars itself (to "off": Terraform drops a provider's logs when no log
// level is set for it, so producing them is wasted). A run's environment leaves
// the marker and those variables out, so the script sees the environment the
// user gave Terraform.
const QuietLogMarker = "AML_SDK_LOG_DEFAULTED"

// QuietLogVars are the log levels the provider sets to "off" (see QuietLogMarker):
// terraform-plugin-go's and -framework's own, and the provider's (tflog).
var QuietLogVars = []string{"TF_LOG_SDK", "TF_LOG_SDK_PROTO", "TF_LOG_SDK_FRAMEWORK", "TF_LOG_PROVIDER_AML"}

func isQuietLogVar(k string) bool {
	if k == QuietLogMarker {
		return true
	}
	for _, q := range QuietLogVars {
		if k == q {
			return true
		}
	}
	return false
}

func isPluginVar(k string) bool {
	return k == "TF_PLUGIN_MAGIC_COOKIE" || k == "TF_REATTACH_PROVIDERS" || strings.HasPrefix(k, "PLUGIN_") || k == "AML_AGENT"
}

// CountGPUs asks nvidia-smi; without it the machine has none we can use.
func CountGPUs(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nvidia-smi", "-L").Output()
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "GPU ") {
			n++
		}
	}
	return n
}
