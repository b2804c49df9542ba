package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/testutil"
)

// tfConfig is a root module with one workspace and one run whose script
// prints a line every half second; var.fail makes it exit 3.
const tfConfig = `terraform {
  required_providers {
    aml = { source = "openaml/aml" }
  }
}

variable "fail" {
  type    = bool
  default = false
}

resource "aml_workspace" "ws" {
  name = "tfcli"
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
  experiment_name      = "tf"
  source_directory     = "${path.module}/src"
  script               = "slow.py"
  arguments            = var.fail ? ["fail"] : []
  compute_target       = "local"
  run_configuration_id = aml_run_configuration.py.id
}
`

const slowScript = `import sys, time, aml_run
for i in range(16):
    aml_run.log("loss", 1.0 / (i + 1), step=i)
    print("tick", i, flush=True)
    time.sleep(0.5)
print("finished", flush=True)
sys.exit(3 if sys.argv[1:] == ["fail"] else 0)
`

// devProvider builds the provider and returns a CLI config that makes
// terraform use it (dev_overrides), as the provider's acceptance tests do.
func devProvider(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(tmp, "terraform-provider-aml"), "../..").CombinedOutput(); err != nil {
		t.Fatalf("building the provider: %v\n%s", err, out)
	}
	rc := filepath.Join(tmp, "cli.tfrc")
	cfg := "provider_installation {\n  dev_overrides {\n    \"openaml/aml\" = \"" + tmp + "\"\n  }\n  direct {}\n}\n"
	if err := os.WriteFile(rc, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return rc
}

// startApply starts `terraform apply` in dir as a separate process; it is
// stopped (by its PID) at cleanup if it is still running.
func startApply(t *testing.T, tf, rc, dir string, args ...string) (wait func() (string, int)) {
	t.Helper()
	cmd := exec.Command(tf, append([]string{"apply", "-auto-approve", "-no-color"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var code int
	go func() {
		err := cmd.Wait()
		code = cmd.ProcessState.ExitCode()
		_ = err
		close(done)
	}()
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = syscall.Kill(pid, syscall.SIGINT) // terraform cancels the run it waits on
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = syscall.Kill(pid, syscall.SIGKILL)
				<-done
			}
		}
	})
	return func() (string, int) {
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			t.Fatalf("terraform apply did not end:\n%s", out.String())
		}
		return out.String(), code
	}
}

// activeRun waits until the workspace of dir has an active run (read with
// aml itself) and returns its id.
func activeRun(t *testing.T, dir string, seen map[string]bool) string {
	t.Helper()
	var id string
	testutil.WaitFor(t, 2*time.Minute, "terraform apply to start a run", func() bool {
		time.Sleep(100 * time.Millisecond)
		// by name at the default place: no terraform show for every poll
		r := aml(t, dir, "runs", "-w", "tfcli", "--json", "--status", "NotStarted,Queued,Preparing,Starting,Running")
		if r.code != 0 {
			return false
		}
		for _, rv := range decode[[]runView](t, r) {
			if !seen[rv.RunID] {
				id = rv.RunID
				return true
			}
		}
		return false
	})
	return id
}

// `aml logs -f` follows a run that `terraform apply`, in another process,
// started and waits on, until it ends, and exits with the run's outcome; the
// workspace is found from the Terraform directory.
func TestAccLogsFollowTerraformApply(t *testing.T) {
	tf := terraformBin()
	if tf == "" {
		t.Skip("terraform (or tofu) is not on PATH and TF_ACC_TERRAFORM_PATH is not set")
	}
	py := python(t)
	rc := devProvider(t)
	dir := testutil.WriteFiles(t, t.TempDir(), map[string]string{"main.tf": fmt.Sprintf(tfConfig, py), "src/slow.py": slowScript})
	// aml runs terraform show -json, which needs the provider's schema: the
	// same dev_overrides as the apply (a user's make install or init does it).
	t.Setenv("TF_CLI_CONFIG_FILE", rc)

	wait := startApply(t, tf, rc, dir)
	id := activeRun(t, dir, map[string]bool{})
	start := time.Now()
	res := aml(t, dir, "logs", "-f", id)
	if res.code != 0 {
		t.Fatalf("aml logs -f: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	for i := 0; i < 16; i++ {
		if strings.Count(res.stdout, fmt.Sprintf("tick %d\n", i)) != 1 {
			t.Fatalf("aml logs -f: tick %d not exactly once:\n%s", i, res.stdout)
		}
	}
	if !strings.HasSuffix(res.stdout, "finished\n") || time.Since(start) < 2*time.Second {
		t.Fatalf("aml logs -f did not follow the run to its end (%s):\n%s", time.Since(start), res.stdout)
	}
	if out, code := wait(); code != 0 {
		t.Fatalf("terraform apply: exit %d\n%s", code, out)
	}
	// With the apply done, the workspace is found through the state.
	ws := decode[workspaceView](t, aml(t, dir, "workspace", "--json").ok(t))
	if ws.Name != "tfcli" || !strings.Contains(ws.FoundBy, "aml_workspace.ws in the Terraform state") {
		t.Fatalf("workspace from state: %+v", ws)
	}
	// ... also from another directory, with --chdir
	if ws2 := decode[workspaceView](t, aml(t, t.TempDir(), "workspace", "--json", "-C", dir).ok(t)); ws2.ID != ws.ID {
		t.Fatalf("--chdir: %+v", ws2)
	}

	// A failing run: the apply fails, and aml logs -f exits 4 (Failed).
	wait = startApply(t, tf, rc, dir, "-var", "fail=true")
	id2 := activeRun(t, dir, map[string]bool{id: true})
	res = aml(t, dir, "logs", "-f", id2)
	if res.code != exitFailed || !strings.Contains(res.stderr, "exit code 3") || !strings.HasSuffix(res.stdout, "finished\n") {
		t.Fatalf("aml logs -f of a failing run: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if out, code := wait(); code == 0 || !strings.Contains(out, "exit code 3") {
		t.Fatalf("terraform apply of a failing run: exit %d\n%s", code, out)
	}
}
