package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
)

// The engine starts run supervisors by re-executing the test binary as its
// agent; the CLI tests run the built `aml` binary.
var amlBin string

func TestMain(m *testing.M) {
	testutil.Main(m, func() func() {
		dir, err := os.MkdirTemp("", "aml-cli-bin-")
		if err != nil {
			panic(err)
		}
		amlBin = filepath.Join(dir, "aml")
		if out, err := exec.Command("go", "build", "-o", amlBin, ".").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building aml: %v\n%s", err, out)
			os.Exit(1)
		}
		return func() { os.RemoveAll(dir) }
	})
}

var (
	pythonOnce sync.Once
	pythonExe  string
)

// python is the real interpreter behind python3 (not a shim), or a skip.
func python(t *testing.T) string {
	t.Helper()
	pythonOnce.Do(func() {
		out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
		if err == nil {
			pythonExe = strings.TrimSpace(string(out))
		}
	})
	if pythonExe == "" {
		t.Skip("python3 is not on PATH (or does not run)")
	}
	return pythonExe
}

func selfExe(t *testing.T) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// fixture is a Terraform-less working directory with one workspace (at the
// default place, .aml/workspaces/ws-cli) and runs made by the real engine.
type fixture struct {
	dir string
	e   *engine.Engine
	ws  *engine.Workspace
	rc  string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	py := python(t)
	dir := t.TempDir()
	e, err := engine.New(engine.Options{AgentCommand: []string{selfExe(t), "agent"}, WorkDir: dir, StatCacheDir: t.TempDir(), CancelGrace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	ctx := context.Background()
	ws, err := e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "ws-cli"})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := e.PutRunConfig(ctx, ws.ID, engine.RunConfigSpec{Name: "py",
		Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: py}}})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, e: e, ws: ws, rc: rc.ID}
}

// trainScript logs a loss per step, writes outputs (one with a name a page
// must escape) and prints log lines; it fails with exit 3 when asked.
const trainScript = `import sys, time, os, aml_run
steps = int(sys.argv[1]); pause = float(sys.argv[2]); fail = len(sys.argv) > 3
for i in range(steps):
    aml_run.log("loss", 1.0 / (i + 1), step=i)
    aml_run.log("<img src=x onerror=alert(1)>", i, step=i)
    print("step", i, "<script>alert('log')</script>", flush=True)
    time.sleep(pause)
aml_run.log("accuracy", 0.5 + steps / 100.0)
out = os.environ["AML_OUTPUTS_DIR"]
open(os.path.join(out, "model.txt"), "w").write("weights %d\n" % steps)
open(os.path.join(out, "<i onmouseover=alert(1)>x.html"), "w").write("<script>alert(1)</script>")
print("done", flush=True)
sys.exit(3 if fail else 0)
`

func (f *fixture) submit(t *testing.T, experiment string, args ...string) *engine.Run {
	t.Helper()
	src := testutil.WriteFiles(t, t.TempDir(), map[string]string{"train.py": trainScript})
	r, err := f.e.SubmitRun(context.Background(), engine.RunRequest{WorkspaceID: f.ws.ID, Experiment: experiment, SourceDirectory: src,
		Script: "train.py", Arguments: args, ComputeTarget: engine.LocalTarget, RunConfigID: f.rc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if r, err := f.e.ReadRun(ctx, r.ID); err == nil && r.Status.Active() {
			_, _ = f.e.CancelRun(ctx, r.ID)
		}
	})
	return r
}

func (f *fixture) finished(t *testing.T, experiment string, args ...string) *engine.Run {
	t.Helper()
	r := f.submit(t, experiment, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done, _ := f.e.WaitRun(ctx, r.ID)
	if done == nil {
		t.Fatalf("run %s did not end", r.ID)
	}
	return done
}

type result struct {
	stdout, stderr string
	code           int
}

// aml runs the built binary in dir.
func aml(t *testing.T, dir string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, amlBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NO_COLOR=", "AML_WORKSPACE=", "AML_BACKEND=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("aml %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

func (r result) ok(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	return r
}

func decode[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.stdout)
	}
	return v
}

func TestCLIAgainstRealRuns(t *testing.T) {
	f := newFixture(t)
	ok1 := f.finished(t, "exp", "4", "0")
	ok2 := f.finished(t, "exp", "6", "0")
	bad := f.finished(t, "other", "2", "0", "fail")
	if ok1.Status != "Completed" || bad.Status != "Failed" {
		t.Fatalf("fixture runs: %s %s", ok1.Status, bad.Status)
	}

	t.Run("workspace found under .aml", func(t *testing.T) {
		v := decode[workspaceView](t, aml(t, f.dir, "workspace", "--json").ok(t))
		if v.ID != f.ws.ID || v.RunCount != 3 {
			t.Fatalf("workspace: %+v", v)
		}
		// and by id, directory and name, from elsewhere
		for _, ref := range []string{f.ws.Dir, "ws-cli"} {
			if v := decode[workspaceView](t, aml(t, f.dir, "workspace", "--json", "-w", ref).ok(t)); v.ID != f.ws.ID {
				t.Fatalf("-w %s: %+v", ref, v)
			}
		}
		if v := decode[workspaceView](t, aml(t, t.TempDir(), "workspace", "--json", "-w", f.ws.Dir).ok(t)); v.ID != f.ws.ID {
			t.Fatalf("-w dir from elsewhere: %+v", v)
		}
	})

	t.Run("runs table and json", func(t *testing.T) {
		out := aml(t, f.dir, "runs").ok(t).stdout
		for _, want := range []string{"RUN", "EXPERIMENT", "STATUS", "DURATION", "accuracy", "loss", ok1.RunID, "Completed", "Failed (nonzero_exit)", "just now"} {
			if !strings.Contains(out, want) {
				t.Errorf("runs table lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "\x1b[") {
			t.Errorf("colour on a pipe:\n%q", out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 || strings.Index(lines[0], "STATUS") != strings.Index(lines[1], "Completed") {
			t.Errorf("not aligned:\n%s", out)
		}
		runs := decode[[]runView](t, aml(t, f.dir, "runs", "--json", "--experiment", "exp").ok(t))
		if len(runs) != 2 || runs[0].Metrics["accuracy"] != 0.54 {
			t.Fatalf("runs --experiment exp: %+v", runs)
		}
		failed := decode[[]runView](t, aml(t, f.dir, "runs", "--status", "failed", "--json").ok(t))
		if len(failed) != 1 || failed[0].RunID != bad.RunID || failed[0].ExitCode == nil || *failed[0].ExitCode != 3 {
			t.Fatalf("runs --status failed: %+v", failed)
		}
		byAcc := decode[[]runView](t, aml(t, f.dir, "runs", "--json", "--order-by", "metric:accuracy", "--desc").ok(t))
		if byAcc[0].RunID != ok2.RunID {
			t.Fatalf("order by accuracy: %+v", byAcc)
		}
	})

	t.Run("runs show", func(t *testing.T) {
		v := decode[runDetailView](t, aml(t, f.dir, "runs", "show", ok2.RunID, "--json").ok(t))
		if v.Status != "Completed" || v.Script != "train.py" || len(v.SnapshotFiles) != 1 || v.SnapshotFiles[0].Path != "train.py" ||
			len(v.OutputFiles) != 2 || len(v.Timeline) != 4 || v.Timeline[2].Phase != "Finalizing" || v.Arguments[0] != "6" {
			t.Fatalf("runs show: %+v", v)
		}
		out := aml(t, f.dir, "runs", "show", ok2.RunID[:len(ok2.RunID)-2]).ok(t).stdout // a unique prefix
		for _, want := range []string{"status", "Completed", "train.py 6 0", "metrics", "accuracy", "0.56"} {
			if !strings.Contains(out, want) {
				t.Errorf("runs show lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		last := decode[map[string]float64](t, aml(t, f.dir, "metrics", ok1.RunID, "--json").ok(t))
		if last["loss"] != 0.25 || last["accuracy"] != 0.54 {
			t.Fatalf("metrics: %v", last)
		}
		hist := decode[[]metricView](t, aml(t, f.dir, "metrics", "--history", "--json", ok2.RunID).ok(t))
		n := 0
		for _, m := range hist {
			if m.Name == "loss" {
				n++
			}
		}
		if n != 6 || len(hist) != 13 {
			t.Fatalf("history: %d loss values, %d in all: %+v", n, len(hist), hist)
		}
	})

	t.Run("logs", func(t *testing.T) {
		out := aml(t, f.dir, "logs", ok1.RunID).ok(t).stdout
		if !strings.Contains(out, "step 3") || !strings.Contains(out, "done") {
			t.Fatalf("logs:\n%s", out)
		}
		// -f on a finished run prints it and exits with its outcome
		if r := aml(t, f.dir, "logs", "-f", bad.RunID); r.code != exitFailed || !strings.Contains(r.stderr, "nonzero_exit, exit code 3") {
			t.Fatalf("logs -f of a failed run: exit %d, %s", r.code, r.stderr)
		}
		if r := aml(t, f.dir, "wait", ok1.RunID); r.code != 0 {
			t.Fatalf("wait completed: %d %s", r.code, r.stderr)
		}
	})

	t.Run("targets", func(t *testing.T) {
		ts := decode[[]targetView](t, aml(t, f.dir, "targets", "--json").ok(t))
		if len(ts) != 1 || ts[0].Name != "local" || ts[0].Kind == "" || ts[0].Facts.Cores == 0 {
			t.Fatalf("targets: %+v", ts)
		}
		out := aml(t, f.dir, "targets").ok(t).stdout
		if !strings.Contains(out, "local") || !strings.Contains(out, "cores") {
			t.Fatalf("targets:\n%s", out)
		}
	})

	t.Run("exit codes", func(t *testing.T) {
		if r := aml(t, f.dir, "runs", "show", "nope"); r.code != exitNotFound {
			t.Errorf("unknown run: exit %d %s", r.code, r.stderr)
		}
		if r := aml(t, t.TempDir(), "runs"); r.code != exitNotFound {
			t.Errorf("no workspace: exit %d %s", r.code, r.stderr)
		}
		if r := aml(t, f.dir, "runs", "--bogus"); r.code != exitUsage {
			t.Errorf("bad flag: exit %d %s", r.code, r.stderr)
		}
		if r := aml(t, f.dir, "frobnicate"); r.code != exitUsage {
			t.Errorf("bad command: exit %d", r.code)
		}
		if r := aml(t, f.dir, "runs", "--backend", "postgres://127.0.0.1/x"); r.code != exitUsage || !strings.Contains(r.stderr, "--workspace NAME") {
			t.Errorf("--backend without a workspace: exit %d %s", r.code, r.stderr)
		}
	})
}

// aml logs -f follows a run while it writes, and exits when it ends.
func TestLogsFollowActiveRun(t *testing.T) {
	f := newFixture(t)
	r := f.submit(t, "live", "8", "0.5")
	res := aml(t, f.dir, "logs", "-f", r.RunID).ok(t)
	for i := 0; i < 8; i++ {
		if !strings.Contains(res.stdout, fmt.Sprintf("step %d ", i)) {
			t.Fatalf("logs -f lacks step %d:\n%s", i, res.stdout)
		}
	}
	if !strings.HasSuffix(strings.TrimSpace(res.stdout), "done") {
		t.Fatalf("logs -f did not follow to the end:\n%s", res.stdout)
	}
	failing := f.submit(t, "live", "3", "0.3", "fail")
	if res := aml(t, f.dir, "logs", "--follow", failing.RunID); res.code != exitFailed {
		t.Fatalf("logs -f of a failing run: exit %d\n%s", res.code, res.stderr)
	}
}

// aml cancel stops an active run; wait then exits with Canceled.
func TestCancelAndWait(t *testing.T) {
	f := newFixture(t)
	r := f.submit(t, "long", "600", "0.5")
	testutil.WaitFor(t, 30*time.Second, "the run to start", func() bool {
		got, err := f.e.ReadRun(context.Background(), r.ID)
		return err == nil && got.Status == "Running"
	})
	v := decode[runView](t, aml(t, f.dir, "cancel", r.RunID, "--json").ok(t))
	if v.Status != "Canceled" {
		t.Fatalf("cancel: %+v", v)
	}
	if res := aml(t, f.dir, "wait", r.RunID); res.code != exitCanceled {
		t.Fatalf("wait canceled: exit %d %s", res.code, res.stderr)
	}
}
