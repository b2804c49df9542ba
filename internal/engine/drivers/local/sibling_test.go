package local_test

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
)

// A provider binary with aml-supervisor beside it (a release archive, `make
// install`) has its runs supervised by that small binary, which takes the
// provider's arguments; the run's outcome is the same.
func TestRunSupervisedBySiblingBinary(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: cannot build cmd/aml-supervisor")
	}
	dir := t.TempDir()
	provider := filepath.Join(dir, "terraform-provider-aml_v9.9.9")
	sibling := supervise.BinaryBeside(provider)
	if sibling != filepath.Join(dir, "aml-supervisor_v9.9.9") {
		t.Fatalf("BinaryBeside(%s) = %s, want aml-supervisor_v9.9.9 beside it", provider, sibling)
	}
	build := exec.Command(goBin, "build", "-o", sibling, "../../../../cmd/aml-supervisor")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cmd/aml-supervisor: %v\n%s", err, out)
	}
	// The "provider": this test binary under a provider's name (it serves `agent
	// ...` too, so a run it supervised itself would also complete).
	copyExecutable(t, agentCommand(t)[0], provider)

	f := newFixture(t, map[string]string{"train.sh": `readlink /proc/$PPID/exe > "$AML_OUTPUTS_DIR/supervisor.txt"
echo '{"name":"acc","value":0.9}' >> "$AML_METRICS_FILE"
`})
	f.drv.AgentCommand = []string{provider, "agent"}
	runDir, ex := f.start(t, []string{sh, "train.sh"}, nil, 0, time.Second)
	st := wait(t, ex, 20*time.Second)
	if st.Status != run.Completed || st.ExitCode == nil || *st.ExitCode != 0 {
		t.Fatalf("state = %+v", st)
	}
	got, err := os.ReadFile(filepath.Join(runDir, supervise.OutputsDir, "supervisor.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != sibling {
		t.Errorf("the run's supervisor was %q, want the sibling %s", strings.TrimSpace(string(got)), sibling)
	}
	col, err := ex.Collect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if run.LastValues(col.Metrics)["acc"] != 0.9 {
		t.Errorf("metrics = %+v", col.Metrics)
	}

	// Without the sibling (or with one that is not executable) the provider
	// supervises its runs itself; the lookup is per process, so a fresh program
	// path shows it.
	alone := filepath.Join(t.TempDir(), "terraform-provider-aml_v9.9.9")
	copyExecutable(t, provider, alone)
	if err := os.WriteFile(supervise.BinaryBeside(alone), []byte("not a program"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := supervise.Command([]string{alone, "agent"}); got[0] != alone {
		t.Errorf("Command with a non-executable sibling = %v, want the provider itself", got)
	}
	if got := supervise.Command([]string{"/usr/bin/true", "agent"}); got[0] != "/usr/bin/true" {
		t.Errorf("Command of a program that is not a provider = %v", got)
	}
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Link(from, to); err == nil {
		return
	}
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// A process the script leaves behind outside its process group (a double fork
// into a session of its own) is stopped when the run ends: the supervisor is
// its subreaper and kills what is left below it.
func TestRunEndStopsEscapedProcesses(t *testing.T) {
	f := newFixture(t, map[string]string{"train.sh": `(setsid sleep 300 & echo $! > "$AML_OUTPUTS_DIR/escaped.pid")
sleep 0.2
`})
	runDir, ex := f.start(t, []string{sh, "train.sh"}, nil, 0, time.Second)
	st := wait(t, ex, 20*time.Second)
	if st.Status != run.Completed {
		t.Fatalf("state = %+v", st)
	}
	b, err := os.ReadFile(filepath.Join(runDir, supervise.OutputsDir, "escaped.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Fatalf("escaped.pid = %q", b)
	}
	testutil.WaitFor(t, 10*time.Second, "the escaped sleep to be stopped", func() bool { return testutil.ProcessGone(pid) })
}
