package provider_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/testutil"
)

// checkoutConfig is a root module with workspaces at the default place and
// at relative storage paths (plain, with "..", with a trailing slash), each
// with a run whose source is under the module.
func checkoutConfig() string {
	return fmt.Sprintf(`terraform {
  required_providers {
    aml = { source = "openaml/aml" }
  }
}

locals {
  workspaces = {
    default  = null
    plain    = "wsdir"
    dotdot   = "sub/../wsdir2"
    trailing = "wsdir3/"
  }
}

resource "aml_workspace" "ws" {
  for_each     = local.workspaces
  name         = "co-${each.key}"
  storage_path = each.value
}

resource "aml_run_configuration" "py" {
  for_each     = aml_workspace.ws
  workspace_id = each.value.id
  name         = "py"
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = %q
    }
  }
}

resource "aml_experiment_run" "train" {
  for_each             = aml_workspace.ws
  workspace_id         = each.value.id
  experiment_name      = "train"
  source_directory     = "${path.module}/src"
  script               = "train.py"
  run_configuration_id = aml_run_configuration.py[each.key].id
}

output "runs" {
  value = { for k, r in aml_experiment_run.train : k => "${r.id} ${r.status} ${r.metrics["accuracy"]}" }
}

output "storage" {
  value = { for k, w in aml_workspace.ws : k => w.storage_path }
}
`, pythonBin)
}

type tfCLI struct {
	t   *testing.T
	bin string
	env []string
}

func newTFCLI(t *testing.T, rc string) *tfCLI {
	return &tfCLI{t: t, bin: terraformBin, env: append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1")}
}

// run runs terraform in dir and returns its output and exit code.
func (c *tfCLI) run(dir string, args ...string) (string, int) {
	c.t.Helper()
	cmd := exec.Command(c.bin, append(args[:1:1], append([]string{"-no-color"}, args[1:]...)...)...)
	cmd.Dir = dir
	cmd.Env = c.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("terraform %v: %v", args, err)
	}
	return out.String(), code
}

// must runs terraform and fails the test unless it exits with want.
func (c *tfCLI) must(want int, dir string, args ...string) string {
	c.t.Helper()
	out, code := c.run(dir, args...)
	if code != want {
		c.t.Fatalf("terraform %s in %s: exit %d, want %d\n%s", strings.Join(args, " "), dir, code, want, out)
	}
	return out
}

func (c *tfCLI) outputs(dir string) map[string]map[string]string {
	c.t.Helper()
	var raw map[string]struct{ Value map[string]string }
	if err := json.Unmarshal([]byte(c.must(0, dir, "output", "-json")), &raw); err != nil {
		c.t.Fatal(err)
	}
	got := map[string]map[string]string{}
	for k, v := range raw {
		got[k] = v.Value
	}
	return got
}

// A configuration copied to another directory with its .aml/ and state (a CI
// runner at another path, a re-cloned checkout) plans no change and applies
// cleanly; relative storage paths stay as written; an edit there re-runs only
// what changed, in the copy's workspace.
func TestAccMovedCheckoutPlansNoChange(t *testing.T) {
	testAccPreCheck(t)
	tf := newTFCLI(t, devOverrides(t))
	root := t.TempDir()
	a := testutil.WriteFiles(t, filepath.Join(root, "a"), map[string]string{"main.tf": checkoutConfig(), "src/train.py": trainScript})

	tf.must(0, a, "apply", "-auto-approve")
	before := tf.outputs(a)
	wantStorage := map[string]string{"default": ".aml/workspaces/co-default", "plain": "wsdir", "dotdot": "sub/../wsdir2", "trailing": "wsdir3/"}
	for k, v := range wantStorage {
		if before["storage"][k] != v {
			t.Errorf("storage_path of %s = %q, want %q as written", k, before["storage"][k], v)
		}
	}
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/runs/\S+ Completed 0.93$`)
	for k, v := range before["runs"] {
		if !uuid.MatchString(v) || strings.Contains(v, root) {
			t.Errorf("run %s: %q, want a path-free id of a completed run", k, v)
		}
	}
	tf.must(0, a, "plan", "-detailed-exitcode")

	b := filepath.Join(root, "elsewhere", "b")
	if err := os.MkdirAll(filepath.Dir(b), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", a, b).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	// Nothing of the copy may lean on the original.
	if err := os.Rename(a, a+".gone"); err != nil {
		t.Fatal(err)
	}
	out := tf.must(0, b, "plan", "-detailed-exitcode")
	if !strings.Contains(out, "No changes") {
		t.Errorf("plan in the copy:\n%s", out)
	}
	out = tf.must(0, b, "apply", "-auto-approve")
	if !strings.Contains(out, "0 added, 0 changed, 0 destroyed") && !strings.Contains(out, "No changes") {
		t.Errorf("apply in the copy changed something:\n%s", out)
	}
	if after := tf.outputs(b); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("outputs changed in the copy:\n%v\n%v", before, after)
	}

	// An edit in the copy replaces the runs (and only them), in B's workspaces.
	if err := os.WriteFile(filepath.Join(b, "src", "train.py"), []byte(trainScript+"\n# edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out = tf.must(2, b, "plan", "-detailed-exitcode")
	if !strings.Contains(out, "4 to add, 0 to change, 4 to destroy") {
		t.Errorf("plan after an edit:\n%s", out)
	}
	tf.must(0, b, "apply", "-auto-approve")
	for _, dir := range []string{".aml/workspaces/co-default", "wsdir", "wsdir2", "wsdir3"} {
		runs, err := runDirs(filepath.Join(b, dir))
		if err != nil || len(runs) != 2 {
			t.Errorf("%s holds runs %v (%v), want the first and the re-run", dir, runs, err)
		}
	}
	tf.must(0, b, "destroy", "-auto-approve")
}

// State of schema version 0 (ids were the workspace's absolute directory) is
// upgraded in place: the next plan changes nothing, and the ids in state no
// longer name a path.
func TestAccUpgradeFromDirectoryIDs(t *testing.T) {
	testAccPreCheck(t)
	const oldRelease = "f6f8829" // the last commit whose ids were directories
	if err := exec.Command("git", "cat-file", "-e", oldRelease+"^{commit}").Run(); err != nil {
		t.Skipf("git history with commit %s is needed to build the old provider: %v", oldRelease, err)
	}
	tmp := t.TempDir()
	src := filepath.Join(tmp, "old-src")
	if out, err := exec.Command("git", "worktree", "add", "--detach", src, oldRelease).CombinedOutput(); err != nil {
		t.Fatalf("git worktree: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("git", "worktree", "remove", "--force", src).Run() })
	oldBin := filepath.Join(tmp, "old-bin")
	build := exec.Command("go", "build", "-o", filepath.Join(oldBin, "terraform-provider-aml"), ".")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the old provider: %v\n%s", err, out)
	}
	oldRC := filepath.Join(tmp, "old.tfrc")
	if err := os.WriteFile(oldRC, []byte("provider_installation {\n  dev_overrides {\n    \"openaml/aml\" = \""+oldBin+"\"\n  }\n  direct {}\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// That build could not plan a relative storage_path: only the default place here.
	cfg := strings.Replace(checkoutConfig(), `    plain    = "wsdir"
    dotdot   = "sub/../wsdir2"
    trailing = "wsdir3/"
`, "", 1)
	dir := testutil.WriteFiles(t, filepath.Join(tmp, "tf"), map[string]string{"main.tf": cfg, "src/train.py": trainScript})
	newTFCLI(t, oldRC).must(0, dir, "apply", "-auto-approve")
	old, err := os.ReadFile(filepath.Join(dir, "terraform.tfstate"))
	if err != nil || !strings.Contains(string(old), `"workspace_id": "`+dir) {
		t.Fatalf("the old provider's state does not hold directory ids (%v):\n%s", err, old)
	}

	tf := newTFCLI(t, devOverrides(t))
	// No resource changes; only the outputs that print ids show the new ones.
	out := tf.must(2, dir, "plan", "-detailed-exitcode")
	if strings.Contains(out, "Plan:") || !strings.Contains(out, "without changing any real infrastructure") {
		t.Errorf("plan after the upgrade:\n%s", out)
	}
	tf.must(0, dir, "apply", "-auto-approve", "-refresh-only")
	state, _ := os.ReadFile(filepath.Join(dir, "terraform.tfstate"))
	if strings.Contains(string(state), `"id": "`+dir) || strings.Contains(string(state), `"workspace_id": "`+dir) {
		t.Errorf("upgraded state still names directories:\n%s", state)
	}
	tf.must(0, dir, "plan", "-detailed-exitcode")
	tf.must(0, dir, "destroy", "-auto-approve")
}
