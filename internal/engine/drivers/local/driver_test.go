package local_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/local"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
	dockertest "github.com/openaml/terraform-provider-aml/internal/testutil/docker"
)

// The driver starts its supervisor by re-executing this test binary with "agent".
func TestMain(m *testing.M) { testutil.Main(m, func() func() { return dockertest.Stop }) }

func agentCommand(t *testing.T) []string {
	t.Helper()
	exe := os.Args[0]
	if !filepath.IsAbs(exe) {
		var err error
		if exe, err = os.Executable(); err != nil {
			t.Fatal(err)
		}
	}
	return []string{exe, "agent"}
}

type fixture struct {
	drv        *local.Driver
	src        string
	blobs      snapshot.BlobStore
	experiment string
}

func newFixture(t *testing.T, files map[string]string) *fixture {
	t.Helper()
	ws := t.TempDir()
	src := t.TempDir()
	for name, body := range files {
		p := filepath.Join(src, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &fixture{
		drv:   &local.Driver{RunsRoot: filepath.Join(ws, "runs"), AgentCommand: agentCommand(t)},
		src:   src,
		blobs: snapshot.BlobStore{Root: filepath.Join(ws, "blobs")},
	}
}

var runSeq atomic.Int64

// start launches argv in a fresh run and registers a cleanup that makes sure
// nothing is left running when the test ends.
func (f *fixture) start(t *testing.T, argv []string, env map[string]string, maxDur, grace time.Duration) (string, drivers.Execution) {
	t.Helper()
	ctx := context.Background()
	m, err := snapshot.Build(ctx, f.src, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.blobs.Ingest(ctx, f.src, m); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("run_%d_%d", time.Now().UnixNano(), runSeq.Add(1))
	h, err := f.drv.Start(ctx, drivers.RunSpec{RunID: id, Experiment: f.experiment, Manifest: m, Blobs: f.blobs, Program: drivers.Program{Command: argv}, Env: env, MaxDuration: maxDur, Grace: grace})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := f.drv.Recover(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	runDir := filepath.Join(f.drv.RunsRoot, id)
	t.Cleanup(func() {
		if st, err := ex.Status(ctx); err == nil && st.Status.Active() {
			_ = ex.Cancel(ctx, 0, run.ReasonCanceled)
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, _ = ex.Wait(wctx)
		}
	})
	return runDir, ex
}

func wait(t *testing.T, ex drivers.Execution, limit time.Duration) drivers.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	st, err := ex.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v (last state %+v)", err, st)
	}
	return st
}

type statusFile struct {
	Status        run.Status `json:"status"`
	SupervisorPID int        `json:"supervisor_pid"`
	ChildPID      int        `json:"child_pid"`
}

func readStatusFile(t *testing.T, runDir string) statusFile {
	t.Helper()
	var st statusFile
	b, err := os.ReadFile(filepath.Join(runDir, supervise.ControlDir, "status.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitRunning waits until the supervisor has started the child, and returns the
// status file then.
func waitRunning(t *testing.T, runDir string) statusFile {
	t.Helper()
	var st statusFile
	testutil.WaitFor(t, 10*time.Second, "the run to be Running", func() bool {
		b, err := os.ReadFile(filepath.Join(runDir, supervise.ControlDir, "status.json"))
		if err != nil || json.Unmarshal(b, &st) != nil {
			return false
		}
		return st.Status == run.Running && st.ChildPID > 0
	})
	return st
}

const sh = "/bin/sh"

func TestRunCompletes(t *testing.T) {
	f := newFixture(t, map[string]string{
		"train.sh": `echo "hello from $AML_RUN_ID"
echo "user=$USER_VAR"
echo "args: $*"
echo "cwd: $(pwd)"
mkdir -p "$AML_OUTPUTS_DIR/sub"
echo model > "$AML_OUTPUTS_DIR/model.txt"
echo w > "$AML_OUTPUTS_DIR/sub/weights.bin"
echo '{"name":"acc","value":0.5,"step":1}' >> "$AML_METRICS_FILE"
echo 'garbage' >> "$AML_METRICS_FILE"
echo '{"name":"acc","value":0.75,"step":2}' >> "$AML_METRICS_FILE"
echo "$PYTHONPATH" > "$AML_LOGS_DIR/pythonpath.txt"
`,
		"data/input.txt": "x",
	})
	runDir, ex := f.start(t, []string{sh, "train.sh", "a b", "c"}, map[string]string{"USER_VAR": "v1", "AML_RUN_ID": "user-cannot-override"}, 0, time.Second)
	st := wait(t, ex, 20*time.Second)
	if st.Status != run.Completed || st.FailureReason != "" || st.ExitCode == nil || *st.ExitCode != 0 {
		t.Fatalf("state = %+v", st)
	}
	if st.StartTime == nil || st.EndTime == nil || st.EndTime.Before(*st.StartTime) {
		t.Errorf("times: %v %v", st.StartTime, st.EndTime)
	}
	col, err := ex.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	id := filepath.Base(runDir)
	for _, want := range []string{"hello from " + id, "user=v1", "args: a b c", "cwd: " + runDir} {
		if !strings.Contains(col.LogTail, want) {
			t.Errorf("log tail lacks %q:\n%s", want, col.LogTail)
		}
	}
	if !slices.Equal(col.OutputFiles, []string{"model.txt", "sub/weights.bin"}) {
		t.Errorf("outputs = %v", col.OutputFiles)
	}
	if col.OutputsPath != filepath.Join(runDir, supervise.OutputsDir) || col.LogPath != filepath.Join(runDir, supervise.LogsDir, supervise.StdLogFile) {
		t.Errorf("paths: %s %s", col.OutputsPath, col.LogPath)
	}
	if len(col.Metrics) != 2 || run.LastValues(col.Metrics)["acc"] != 0.75 {
		t.Errorf("metrics = %+v", col.Metrics)
	}
	if _, err := os.Stat(filepath.Join(runDir, "data", "input.txt")); err != nil {
		t.Errorf("snapshot not materialized in the run dir: %v", err)
	}
	pp, _ := os.ReadFile(filepath.Join(runDir, supervise.LogsDir, "pythonpath.txt"))
	lib := filepath.Join(runDir, supervise.ControlDir, "lib.zip")
	if first, _, _ := strings.Cut(strings.TrimSpace(string(pp)), string(os.PathListSeparator)); first != lib {
		t.Errorf("PYTHONPATH = %q, want the helper lib %s first", pp, lib)
	}
	if zr, err := zip.OpenReader(lib); err != nil {
		t.Errorf("helper lib: %v", err)
	} else {
		if _, err := zr.Open("aml_run.py"); err != nil {
			t.Errorf("aml_run helper missing from %s: %v", lib, err)
		}
		zr.Close()
	}

	// Logs are resumable from an offset.
	all, next, err := ex.Logs(context.Background(), 0)
	if err != nil || int64(len(all)) != next || !bytes.Contains(all, []byte("hello from")) {
		t.Fatalf("Logs(0) = %d bytes, next %d, %v", len(all), next, err)
	}
	rest, next2, err := ex.Logs(context.Background(), 6)
	if err != nil || !bytes.Equal(rest, all[6:]) || next2 != next {
		t.Errorf("Logs(6) = %q, %d, %v", rest, next2, err)
	}
	none, next3, err := ex.Logs(context.Background(), next)
	if err != nil || len(none) != 0 || next3 != next {
		t.Errorf("Logs(end) = %q, %d, %v", none, next3, err)
	}

	// A finished run reports the same state every time it is observed.
	again, err := ex.Status(context.Background())
	if err != nil || again.Status != run.Completed {
		t.Errorf("Status after completion: %+v %v", again, err)
	}
}

func TestRunOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		script   string
		argv0    string
		maxDur   time.Duration
		status   run.Status
		reason   string
		exitCode int // -1: none
		signal   string
		logHas   string
	}{
		{"nonzero exit", "echo failing; exit 3", sh, 0, run.Failed, run.ReasonNonzeroExit, 3, "", "failing"},
		{"killed by a signal", "kill -KILL $$", sh, 0, run.Failed, run.ReasonKilled, 128 + 9, "killed", ""},
		{"max duration", "echo started; sleep 30", sh, 500 * time.Millisecond, run.Failed, run.ReasonTimedOut, 128 + 15, "terminated", "max_run_duration_seconds"},
		{"cannot start", "", "/nonexistent/interpreter", 0, run.Failed, run.ReasonSetupFailed, -1, "", "cannot start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, map[string]string{"s.sh": tt.script})
			began := time.Now()
			_, ex := f.start(t, []string{tt.argv0, "s.sh"}, nil, tt.maxDur, 5*time.Second)
			st := wait(t, ex, 20*time.Second)
			if st.Status != tt.status || st.FailureReason != tt.reason {
				t.Fatalf("state = %+v, want %s/%s", st, tt.status, tt.reason)
			}
			if tt.exitCode < 0 {
				if st.ExitCode != nil {
					t.Errorf("exit code = %d, want none", *st.ExitCode)
				}
			} else if st.ExitCode == nil || *st.ExitCode != tt.exitCode {
				t.Errorf("exit code = %v, want %d", st.ExitCode, tt.exitCode)
			}
			if st.Signal != tt.signal {
				t.Errorf("signal = %q, want %q", st.Signal, tt.signal)
			}
			if tt.maxDur > 0 && time.Since(began) > 10*time.Second {
				t.Errorf("a run with max duration %s took %s", tt.maxDur, time.Since(began))
			}
			col, err := ex.Collect(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(col.LogTail, tt.logHas) {
				t.Errorf("log tail lacks %q:\n%s", tt.logHas, col.LogTail)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	tests := []struct {
		name   string
		script string
		grace  time.Duration
		// minimum time the cancel must take (the grace period, for a script that
		// ignores SIGTERM)
		atLeast time.Duration
	}{
		{"plain", "echo $$ > \"$AML_OUTPUTS_DIR/pid\"; sleep 30 & wait", 5 * time.Second, 0},
		{"ignores SIGTERM", "trap '' TERM; echo $$ > \"$AML_OUTPUTS_DIR/pid\"; sleep 30 & wait; sleep 30", 1 * time.Second, 900 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, map[string]string{"s.sh": tt.script})
			runDir, ex := f.start(t, []string{sh, "s.sh"}, nil, 0, tt.grace)
			sf := waitRunning(t, runDir)
			testutil.WaitFor(t, 10*time.Second, "the pid file", func() bool {
				_, err := os.Stat(filepath.Join(runDir, supervise.OutputsDir, "pid"))
				return err == nil
			})
			began := time.Now()
			if err := ex.Cancel(context.Background(), tt.grace, "my_reason"); err != nil {
				t.Fatal(err)
			}
			st := wait(t, ex, tt.grace+10*time.Second)
			took := time.Since(began)
			if st.Status != run.Canceled || st.FailureReason != "my_reason" {
				t.Fatalf("state = %+v, want Canceled/my_reason", st)
			}
			if took < tt.atLeast {
				t.Errorf("cancel took %s, less than the grace period", took)
			}
			if took > tt.grace+5*time.Second {
				t.Errorf("cancel took %s", took)
			}
			testutil.WaitFor(t, 5*time.Second, "the script's process group to be gone", func() bool {
				return syscall.Kill(-sf.ChildPID, 0) != nil || testutil.ProcessGone(sf.ChildPID)
			})
			// Cancel of a finished run is a no-op.
			if err := ex.Cancel(context.Background(), tt.grace, "again"); err != nil {
				t.Errorf("second cancel: %v", err)
			}
			if again, _ := ex.Status(context.Background()); again.FailureReason != "my_reason" {
				t.Errorf("second cancel changed the outcome: %+v", again)
			}
		})
	}
}

func TestLostSupervisor(t *testing.T) {
	f := newFixture(t, map[string]string{"s.sh": "sleep 30 & wait"})
	runDir, ex := f.start(t, []string{sh, "s.sh"}, nil, 0, time.Second)
	sf := waitRunning(t, runDir)
	if sf.SupervisorPID <= 0 {
		t.Fatalf("status file has no supervisor pid: %+v", sf)
	}
	if err := syscall.Kill(sf.SupervisorPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the supervisor to die", func() bool { return testutil.ProcessGone(sf.SupervisorPID) })
	st, err := ex.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != run.Failed || st.FailureReason != run.ReasonLost || !strings.Contains(st.Message, strconv.Itoa(sf.SupervisorPID)) {
		t.Fatalf("state = %+v, want Failed/lost naming pid %d", st, sf.SupervisorPID)
	}
	testutil.WaitFor(t, 5*time.Second, "the orphaned script to be killed", func() bool { return testutil.ProcessGone(sf.ChildPID) })
	// The verdict is recorded: later observers agree without killing anything again.
	again, err := ex.Status(context.Background())
	if err != nil || again.Status != run.Failed || again.FailureReason != run.ReasonLost {
		t.Errorf("second observation: %+v %v", again, err)
	}
}

func TestCancelWithoutSupervisor(t *testing.T) {
	// The supervisor died; a cancel must still stop the script's group itself.
	f := newFixture(t, map[string]string{"s.sh": "sleep 30 & wait"})
	runDir, ex := f.start(t, []string{sh, "s.sh"}, nil, 0, time.Second)
	sf := waitRunning(t, runDir)
	if err := syscall.Kill(sf.SupervisorPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the supervisor to die", func() bool { return testutil.ProcessGone(sf.SupervisorPID) })
	if err := ex.Cancel(context.Background(), 500*time.Millisecond, run.ReasonCanceled); err != nil {
		t.Fatal(err)
	}
	st := wait(t, ex, 5*time.Second)
	if st.Status != run.Canceled || st.FailureReason != run.ReasonCanceled {
		t.Fatalf("state = %+v", st)
	}
	testutil.WaitFor(t, 5*time.Second, "the script to be killed", func() bool { return testutil.ProcessGone(sf.ChildPID) })
}

func TestStartRefusesExistingRunDir(t *testing.T) {
	f := newFixture(t, map[string]string{"s.sh": "true"})
	ctx := context.Background()
	m, err := snapshot.Build(ctx, f.src, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.blobs.Ingest(ctx, f.src, m); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(f.drv.RunsRoot, "dup"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = f.drv.Start(ctx, drivers.RunSpec{RunID: "dup", Manifest: m, Blobs: f.blobs, Program: drivers.Program{Command: []string{sh, "s.sh"}}})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("err = %v", err)
	}
}

func TestRecoverBadHandles(t *testing.T) {
	d := &local.Driver{RunsRoot: t.TempDir()}
	for _, h := range []string{`not json`, `{}`, `{"run_dir":""}`} {
		if _, err := d.Recover(context.Background(), drivers.Handle(h)); err == nil {
			t.Errorf("Recover(%s) succeeded", h)
		}
	}
	// A handle whose run directory vanished reads as lost, not as an error.
	ex, err := d.Recover(context.Background(), drivers.Handle(`{"run_dir":"`+filepath.Join(t.TempDir(), "gone")+`","supervisor_pid":1}`))
	if err != nil {
		t.Fatal(err)
	}
	st, err := ex.Status(context.Background())
	if err != nil || st.Status != run.Failed || st.FailureReason != run.ReasonLost {
		t.Errorf("vanished run dir: %+v %v", st, err)
	}
}

func TestProbe(t *testing.T) {
	f, err := (&local.Driver{}).Probe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if f.Hostname != host || f.Cores < 1 || f.OS == "" || f.Arch == "" {
		t.Errorf("facts = %+v", f)
	}
}

func TestRunEnvironment(t *testing.T) {
	base := []string{
		"PATH=/usr/bin",
		"HOME=/root",
		"TF_PLUGIN_MAGIC_COOKIE=secret",
		"TF_REATTACH_PROVIDERS={}",
		"PLUGIN_PROTOCOL_VERSIONS=6",
		"AML_AGENT=1",
		"PYTHONPATH=/existing",
		"SHARED=base",
		"malformed",
	}
	got := supervise.RunEnvironment(base,
		map[string]string{"SHARED": "user", "MINE": "1", "AML_RUN_ID": "user"},
		map[string]string{"AML_RUN_ID": "r1"},
		map[string]string{"MLFLOW_TRACKING_URI": "file:///run/.aml/mlruns", "MLFLOW_ALLOW_FILE_STORE": "true"},
		"/run/.aml/lib")
	want := []string{
		"AML_RUN_ID=r1",
		"HOME=/root",
		"MINE=1",
		"MLFLOW_ALLOW_FILE_STORE=true",
		"MLFLOW_TRACKING_URI=file:///run/.aml/mlruns",
		"PATH=/usr/bin",
		"PYTHONPATH=/run/.aml/lib" + string(os.PathListSeparator) + "/existing",
		"SHARED=user",
	}
	if !slices.Equal(got, want) {
		t.Errorf("RunEnvironment =\n%q\nwant\n%q", got, want)
	}

	// A run (or Terraform's environment) that names its own MLflow tracking
	// keeps it, and gets none of the defaults.
	got = supervise.RunEnvironment([]string{"MLFLOW_TRACKING_URI=http://mlflow:5000"}, nil, nil,
		map[string]string{"MLFLOW_TRACKING_URI": "file:///x", "MLFLOW_ALLOW_FILE_STORE": "true"}, "")
	if !slices.Equal(got, []string{"MLFLOW_TRACKING_URI=http://mlflow:5000"}) {
		t.Errorf("own MLflow tracking: %q", got)
	}
	got = supervise.RunEnvironment([]string{"A=1"}, map[string]string{"MLFLOW_TRACKING_URI": "databricks"}, nil,
		map[string]string{"MLFLOW_TRACKING_URI": "file:///x", "MLFLOW_ALLOW_FILE_STORE": "true"}, "")
	if !slices.Equal(got, []string{"A=1", "MLFLOW_TRACKING_URI=databricks"}) {
		t.Errorf("run's own MLflow tracking: %q", got)
	}
	got = supervise.RunEnvironment([]string{"A=1"}, nil, nil, nil, "/lib")
	if !slices.Equal(got, []string{"A=1", "PYTHONPATH=/lib"}) {
		t.Errorf("no PYTHONPATH in base: %q", got)
	}
	got = supervise.RunEnvironment([]string{"A=1"}, nil, nil, nil, "")
	if !slices.Equal(got, []string{"A=1"}) {
		t.Errorf("no helper lib: %q", got)
	}
}

func TestListFiles(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "outputs")
	outside := filepath.Join(root, "secret.txt")
	for _, p := range []string{"b.txt", "a/z.txt", "a/b/c.txt"} {
		fp := filepath.Join(dir, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(fp), 0o755)
		if err := os.WriteFile(fp, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(outside, []byte("s"), 0o644)
	os.MkdirAll(filepath.Join(dir, "empty"), 0o755)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("b.txt", filepath.Join(dir, "inside-link")))
	must(os.Symlink(outside, filepath.Join(dir, "escape-abs")))
	must(os.Symlink("../secret.txt", filepath.Join(dir, "escape-rel")))
	must(os.Symlink("nowhere", filepath.Join(dir, "dangling")))
	must(syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))

	got, err := hostrun.ListFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a/b/c.txt", "a/z.txt", "b.txt", "inside-link"}
	if !slices.Equal(got, want) {
		t.Errorf("ListFiles = %q, want %q", got, want)
	}

	got, err = hostrun.ListFiles(filepath.Join(root, "missing"))
	if err != nil || len(got) != 0 {
		t.Errorf("missing dir: %q %v", got, err)
	}
}
