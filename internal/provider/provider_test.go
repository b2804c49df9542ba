package provider_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
	"github.com/openaml/terraform-provider-aml/internal/provider"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
	dockertest "github.com/openaml/terraform-provider-aml/internal/testutil/docker"
)

// testAccProtoV6ProviderFactories serves the provider in-process to the
// Terraform CLI that terraform-plugin-testing drives: the same server main.go
// serves, plan fast path included.
var testAccProtoV6ProviderFactories = map[string]func() (tfprotov6.ProviderServer, error){
	"aml": func() (tfprotov6.ProviderServer, error) { return provider.NewProtocol6Server("test")(), nil },
}

var (
	// terraformBin is the Terraform CLI the tests use; empty when there is none,
	// and then terraformMissing says why.
	terraformBin     string
	terraformMissing string
	// pythonBin is the real python3 (not a pyenv shim, so runs start fast).
	pythonBin     string
	pythonMissing string
)

func TestMain(m *testing.M) { testutil.Main(m, setupAcceptance) }

func setupAcceptance() (cleanup func()) {
	terraformBin, terraformMissing = findTerraform()
	if terraformBin != "" {
		// Pin plugin-testing to this binary: it must never download one.
		os.Setenv("TF_ACC_TERRAFORM_PATH", terraformBin)
	}
	pythonBin, pythonMissing = findPython()

	// The provider keeps its plan-time stat cache under the user cache
	// directory; give the tests' throwaway source directories a cache of their
	// own. The Go build cache (used to build the provider binary) stays put.
	if os.Getenv("GOCACHE") == "" {
		if d, err := os.UserCacheDir(); err == nil {
			os.Setenv("GOCACHE", filepath.Join(d, "go-build"))
		}
	}
	cacheDir, err := os.MkdirTemp("", "aml-acc-cache-")
	if err == nil {
		os.Setenv("XDG_CACHE_HOME", cacheDir)
	}
	return func() {
		dockertest.Stop()
		if cacheDir != "" {
			os.RemoveAll(cacheDir)
		}
	}
}

func findTerraform() (string, string) {
	if p := os.Getenv("TF_ACC_TERRAFORM_PATH"); p != "" {
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return "", fmt.Sprintf("TF_ACC_TERRAFORM_PATH=%s is not an executable file", p)
		}
		return p, ""
	}
	p, err := exec.LookPath("terraform")
	if err != nil {
		return "", "terraform CLI not found on PATH and TF_ACC_TERRAFORM_PATH is not set"
	}
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	return p, ""
}

func findPython() (string, string) {
	p, err := exec.LookPath("python3")
	if err != nil {
		return "", "python3 not found on PATH"
	}
	out, err := exec.Command(p, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		return "", fmt.Sprintf("%s does not run: %v", p, err)
	}
	if real := strings.TrimSpace(string(out)); real != "" {
		return real, ""
	}
	return p, ""
}

// testAccPreCheck skips when a part the acceptance tests need is missing.
func testAccPreCheck(t *testing.T) {
	t.Helper()
	if os.Getenv("TF_ACC") == "" {
		t.Skip("acceptance tests run only with TF_ACC=1 (make testacc)")
	}
	if terraformBin == "" {
		t.Skip(terraformMissing)
	}
	if pythonBin == "" {
		t.Skip(pythonMissing)
	}
}

// newSourceDir creates a source directory holding files.
func newSourceDir(t *testing.T, files map[string]string) string {
	t.Helper()
	return testutil.WriteFiles(t, filepath.Join(t.TempDir(), "src"), files)
}

// testEngine opens workspaces the way the provider does, to check what it wrote.
func testEngine(t *testing.T) *engine.Engine {
	t.Helper()
	e, err := engine.New(engine.Options{StatCacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func workspaceRunCount(t *testing.T, wsDir string) (int, error) {
	t.Helper()
	e := testEngine(t)
	ws, err := e.ReadWorkspace(context.Background(), wsDir)
	if err != nil {
		return 0, err
	}
	return ws.RunCount, nil
}

// runDirs lists the run directories under a workspace.
func runDirs(wsDir string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(wsDir, "runs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// checkNoRuns fails unless the workspace holds no run record and no run directory.
func checkNoRuns(t *testing.T, wsDir string) error {
	t.Helper()
	n, err := workspaceRunCount(t, wsDir)
	if err != nil {
		return err
	}
	if n != 0 {
		return fmt.Errorf("workspace %s holds %d run record(s), want 0", wsDir, n)
	}
	dirs, err := runDirs(wsDir)
	if err != nil {
		return err
	}
	if len(dirs) != 0 {
		return fmt.Errorf("workspace %s has run directories %v, want none", wsDir, dirs)
	}
	return nil
}

// stateAttr reads one attribute of a resource from plugin-testing's state.
func stateAttr(s *terraform.State, address, attr string) (string, error) {
	rs, ok := s.RootModule().Resources[address]
	if !ok {
		return "", fmt.Errorf("%s not in state", address)
	}
	v, ok := rs.Primary.Attributes[attr]
	if !ok {
		return "", fmt.Errorf("%s has no attribute %s", address, attr)
	}
	return v, nil
}

// importIDFromState returns an ImportStateIdFunc reading a resource's id.
func importIDFromState(address string) func(*terraform.State) (string, error) {
	return func(s *terraform.State) (string, error) { return stateAttr(s, address, "id") }
}

// workspaceConfig is a workspace plus a user-managed Python run configuration
// named "py"; storage paths are absolute because the provider runs in the test
// process, not in Terraform's working directory.
func workspaceConfig(wsDir string) string {
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
}
`, wsDir, pythonBin)
}

// trainScript logs metrics, prints a line and writes outputs/model.txt.
const trainScript = `import os
import aml_run

print("hello from train.py", flush=True)
aml_run.log("accuracy", 0.93)
aml_run.log("loss", 0.5, step=1)
aml_run.log("loss", 0.25, step=2)
with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "model.txt"), "w") as f:
    f.write("weights")
`

// wrapped matches a phrase in Terraform's output, where diagnostics are
// word-wrapped: every run of spaces in the phrase matches any whitespace.
func wrapped(phrase string) *regexp.Regexp {
	words := strings.Fields(phrase)
	for i, w := range words {
		words[i] = regexp.QuoteMeta(w)
	}
	return regexp.MustCompile(strings.Join(words, `\s+`))
}

// wrappedAll matches the phrases in order, anything between them.
func wrappedAll(phrases ...string) *regexp.Regexp {
	parts := make([]string, len(phrases))
	for i, p := range phrases {
		parts[i] = wrapped(p).String()
	}
	return regexp.MustCompile(`(?s)` + strings.Join(parts, `.*`))
}

// remotePool is an SSH connection pool for a test's own checks.
func remotePool(t *testing.T) *remote.Pool {
	t.Helper()
	p := remote.NewPool()
	t.Cleanup(p.Close)
	return p
}
