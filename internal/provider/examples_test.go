package provider_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
)

// Every example under examples/ is a complete configuration of its own: the
// real terraform validates it against this provider (a binary built from this
// tree, through dev_overrides, so nothing is downloaded).
func TestExamplesValidate(t *testing.T) {
	testAccPreCheck(t)
	rc := devOverrides(t)
	var dirs []string
	err := filepath.WalkDir("../../examples", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".tf" {
			return err
		}
		if dir := filepath.Dir(p); len(dirs) == 0 || dirs[len(dirs)-1] != dir {
			dirs = append(dirs, dir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 8 {
		t.Fatalf("found only %d example directories: %v", len(dirs), dirs)
	}
	for _, dir := range dirs {
		t.Run(strings.TrimPrefix(filepath.ToSlash(dir), "../../examples/"), func(t *testing.T) {
			cmd := exec.Command(terraformBin, "validate", "-no-color")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "TF_IN_AUTOMATION=1")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "The configuration is valid") {
				t.Fatalf("terraform validate in %s: %v\n%s", dir, err, out)
			}
		})
	}
}

// devOverrides builds the provider from this tree and returns a Terraform CLI
// configuration that uses it (dev_overrides: no init, nothing downloaded).
func devOverrides(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	buildProvider(t, filepath.Join(tmp, "terraform-provider-aml"))
	rc := filepath.Join(tmp, "cli.tfrc")
	cfg := "provider_installation {\n  dev_overrides {\n    \"openaml/aml\" = \"" + tmp + "\"\n  }\n  direct {}\n}\n"
	if err := os.WriteFile(rc, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return rc
}

// buildProvider builds the provider from this tree at bin, and the run
// supervisor beside it as a release archive and `make install` place it
// (aml-supervisor with bin's version suffix), so the runs of tests that use
// it are supervised by that binary.
func buildProvider(t *testing.T, bin string) {
	t.Helper()
	if out, err := exec.Command("go", "build", "-o", bin, "../..").CombinedOutput(); err != nil {
		t.Fatalf("building the provider: %v\n%s", err, out)
	}
	sup := supervise.BinaryBeside(bin)
	build := exec.Command("go", "build", "-o", sup, "../../cmd/aml-supervisor")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cmd/aml-supervisor: %v\n%s", err, out)
	}
}

// terraform test applies a training run, asserts on it and destroys everything
// at the end: with the default deletion_policy that clean-up succeeds, and the
// run history stays on disk.
func TestTerraformTestCleanupKeepsHistory(t *testing.T) {
	testAccPreCheck(t)
	rc := devOverrides(t)
	dir := t.TempDir()
	testutil.WriteFiles(t, dir, map[string]string{
		"src/train.py": trainScript,
		"main.tf": fmt.Sprintf(`terraform {
  required_providers {
    aml = { source = "openaml/aml" }
  }
}

resource "aml_workspace" "ws" {
  name = "tftest"
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
  experiment_name      = "train"
  source_directory     = "${path.module}/src"
  script               = "train.py"
  run_configuration_id = aml_run_configuration.py.id
}
`, pythonBin),
		"tests/train.tftest.hcl": `run "train" {
  assert {
    condition     = aml_experiment_run.train.status == "Completed" && aml_experiment_run.train.metrics["accuracy"] > 0.9
    error_message = "the run did not complete with its accuracy"
  }
}
`,
	})
	cmd := exec.Command(terraformBin, "test", "-no-color")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "TF_IN_AUTOMATION=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "1 passed, 0 failed") {
		t.Fatalf("terraform test: %v\n%s", err, out)
	}
	n, err := workspaceRunCount(t, filepath.Join(dir, ".aml", "workspaces", "tftest"))
	if err != nil || n != 1 {
		t.Fatalf("after the clean-up the workspace holds %d run(s) (%v); want its history kept", n, err)
	}
}
