package provider_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/testutil"
)

// TF_LOG_PROVIDER=INFO shows a run's progress through the real terraform:
// the first line names the run's log, then each status, the last log line
// while it runs, and the result.
func TestAccRunProgressAtInfo(t *testing.T) {
	testAccPreCheck(t)
	tf := newTFCLI(t, devOverrides(t))
	tf.env = append(tf.env, "TF_LOG_PROVIDER=INFO")
	dir := testutil.WriteFiles(t, t.TempDir(), map[string]string{
		"src/train.py": "import time\nfor i in range(4):\n    print(f'epoch {i} loss {1/(i+1):.2f}', flush=True)\n    time.sleep(2)\n",
		"main.tf": fmt.Sprintf(`terraform {
  required_providers {
    aml = { source = "openaml/aml" }
  }
}

resource "aml_workspace" "ws" {
  name = "progress"
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
}

resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "progress"
  source_directory     = "${path.module}/src"
  script               = "train.py"
  run_configuration_id = aml_run_configuration.py.id
}
`, pythonBin),
	})
	out := tf.must(0, dir, "apply", "-auto-approve")
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "[INFO]") && strings.Contains(l, "run progress_") {
			lines = append(lines, l)
		}
	}
	joined := strings.Join(lines, "\n")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`run progress_\S+: \w+ on local; log: \S+/runs/progress_\S+/logs/std_log\.txt`),
		regexp.MustCompile(`run progress_\S+: epoch \d loss`),
		regexp.MustCompile(`run progress_\S+: Completed \(exit code 0\)`),
	} {
		if !want.MatchString(joined) {
			t.Errorf("no INFO line matches %s; the run's INFO lines:\n%s", want, joined)
		}
	}
	if strings.Index(joined, "log: ") > strings.Index(joined, "epoch") {
		t.Errorf("the log path comes after the first log line:\n%s", joined)
	}
	tf.must(0, dir, "destroy", "-auto-approve")
}
