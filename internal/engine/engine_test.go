package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
)

// childEnv, when set, makes the test binary act as a short-lived provider process
// that submits one run and exits without acknowledging it (an interrupted apply).
const childEnv = "AML_ENGINE_TEST_SUBMIT_CHILD"

type childJob struct {
	WorkDir      string
	StatCacheDir string
	Request      engine.RunRequest
}

func TestMain(m *testing.M) {
	testutil.Main(m, func() func() {
		if job := os.Getenv(childEnv); job != "" {
			os.Exit(submitChild(job))
		}
		return nil
	})
}

func submitChild(job string) int {
	var j childJob
	if err := json.Unmarshal([]byte(job), &j); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	e, err := engine.New(engine.Options{AgentCommand: []string{selfExe(), "agent"}, WorkDir: j.WorkDir, StatCacheDir: j.StatCacheDir, CancelGrace: 2 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r, err := e.SubmitRun(context.Background(), j.Request)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Exit at once: no AcknowledgeRun, no Close, as if the apply was killed.
	fmt.Println(r.ID)
	return 0
}

func selfExe() string {
	if filepath.IsAbs(os.Args[0]) {
		return os.Args[0]
	}
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return exe
}

func newEngine(t *testing.T, workDir string, options ...func(*engine.Options)) *engine.Engine {
	t.Helper()
	opts := engine.Options{
		AgentCommand: []string{selfExe(), "agent"},
		WorkDir:      workDir,
		StatCacheDir: t.TempDir(),
		CancelGrace:  2 * time.Second,
	}
	for _, o := range options {
		o(&opts)
	}
	e, err := engine.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

var (
	pythonOnce sync.Once
	pythonExe  string
	pythonErr  error
)

// python returns the real interpreter behind python3 (not a version-manager shim,
// which would slow every run down), or skips the test.
func python(t *testing.T) string {
	t.Helper()
	pythonOnce.Do(func() {
		if _, pythonErr = exec.LookPath("python3"); pythonErr != nil {
			return
		}
		var out []byte
		out, pythonErr = exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
		pythonExe = strings.TrimSpace(string(out))
	})
	if pythonErr != nil || pythonExe == "" {
		t.Skipf("python3 is not on PATH (or does not run): %v", pythonErr)
	}
	return pythonExe
}

// env is one engine with one workspace and one run configuration.
type testEnv struct {
	e       *engine.Engine
	workDir string
	ws      string // the workspace id
	wsDir   string // its directory
	rc      string
}

func setup(t *testing.T, mutate func(*engine.RunConfigSpec), options ...func(*engine.Options)) *testEnv {
	t.Helper()
	py := python(t)
	workDir := t.TempDir()
	e := newEngine(t, workDir, options...)
	ctx := context.Background()
	ws, err := e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "ws-test"})
	if err != nil {
		t.Fatal(err)
	}
	spec := engine.RunConfigSpec{
		Name:        "rc",
		Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: py}},
	}
	if mutate != nil {
		mutate(&spec)
	}
	rc, err := e.PutRunConfig(ctx, ws.ID, spec)
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{e: e, workDir: workDir, ws: ws.ID, wsDir: ws.Dir, rc: rc.ID}
}

func writeSource(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func (te *testEnv) request(src, script string, args ...string) engine.RunRequest {
	return engine.RunRequest{
		WorkspaceID:     te.ws,
		Experiment:      "exp",
		SourceDirectory: src,
		Script:          script,
		Arguments:       args,
		ComputeTarget:   engine.LocalTarget,
		RunConfigID:     te.rc,
	}
}

// submit submits and makes sure the run is not left running after the test.
func (te *testEnv) submit(t *testing.T, req engine.RunRequest) *engine.Run {
	t.Helper()
	r, err := te.e.SubmitRun(context.Background(), req)
	if err != nil {
		t.Fatalf("SubmitRun: %v", err)
	}
	stopAtCleanup(t, te.e, r.ID)
	return r
}

func stopAtCleanup(t *testing.T, e *engine.Engine, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if r, err := e.ReadRun(ctx, id); err == nil && r.Status.Active() {
			_, _ = e.CancelRun(ctx, id)
		}
	})
}

func waitRun(t *testing.T, e *engine.Engine, id string, limit time.Duration) (*engine.Run, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	r, err := e.WaitRun(ctx, id)
	if r == nil {
		t.Fatalf("WaitRun returned no run: %v", err)
	}
	return r, err
}

// waitStatus polls ReadRun (which observes the target) until the run has want.
func waitStatus(t *testing.T, e *engine.Engine, id string, want run.Status) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := e.ReadRun(context.Background(), id)
		if err != nil {
			t.Fatalf("ReadRun: %v", err)
		}
		if r.Status == want {
			return
		}
		if r.Status.Terminal() || time.Now().After(deadline) {
			t.Fatalf("run is %s (%s), want %s", r.Status, r.FailureReason, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readPID waits for the script to write its pid to outputs/pid.txt.
func readPID(t *testing.T, r *engine.Run) int {
	t.Helper()
	var pid int
	testutil.WaitFor(t, 15*time.Second, "the script's pid file", func() bool {
		b, err := os.ReadFile(filepath.Join(r.OutputsPath, "pid.txt"))
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	return pid
}

func assertGone(t *testing.T, pid int) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("process %d (the script's group) to be gone", pid), func() bool {
		return testutil.ProcessGone(pid)
	})
}

func runCount(t *testing.T, e *engine.Engine, ws string) int {
	t.Helper()
	w, err := e.ReadWorkspace(context.Background(), ws)
	if err != nil {
		t.Fatal(err)
	}
	return w.RunCount
}

func fieldErr(t *testing.T, err error) *engine.FieldError {
	t.Helper()
	var fe *engine.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v (%T), want *engine.FieldError", err, err)
	}
	return fe
}

// pidScript writes its pid (atomically) and then does body.
const pidScript = `import os, signal, sys, time
out = os.environ["AML_OUTPUTS_DIR"]
with open(os.path.join(out, "pid.tmp"), "w") as f:
    f.write(str(os.getpid()))
os.replace(os.path.join(out, "pid.tmp"), os.path.join(out, "pid.txt"))
print("waiting", flush=True)
`

// --- workspaces -------------------------------------------------------------

func TestWorkspaceLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	workDir := t.TempDir()
	e := newEngine(t, workDir)

	ws, err := e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "team_a", Description: "first", Tags: map[string]string{"owner": "me"}})
	if err != nil {
		t.Fatal(err)
	}
	wantDir := filepath.Join(workDir, engine.DefaultWorkspaceRoot, "team_a")
	if !engine.IsWorkspaceID(ws.ID) || ws.Dir != wantDir || ws.StoragePath != ".aml/workspaces/team_a" || ws.Name != "team_a" || ws.Description != "first" || ws.Tags["owner"] != "me" || ws.RunCount != 0 || ws.CreatedAt.IsZero() {
		t.Fatalf("created %+v", ws)
	}
	if _, err := os.Stat(filepath.Join(wantDir, "workspace.db")); err != nil {
		t.Fatal(err)
	}

	// A second engine (another provider process) reads the same workspace by id.
	got, err := newEngine(t, workDir).ReadWorkspace(ctx, ws.ID)
	if err != nil || got.Name != "team_a" || got.Description != "first" {
		t.Fatalf("read: %+v %v", got, err)
	}

	upd, err := e.UpdateWorkspace(ctx, ws.ID, "second", map[string]string{"k": "v"})
	if err != nil || upd.Description != "second" || upd.Tags["k"] != "v" || upd.Tags["owner"] != "" {
		t.Fatalf("update: %+v %v", upd, err)
	}

	// Creating it again (lost state) adopts it and applies the new description.
	again, err := e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "team_a", Description: "third"})
	if err != nil || again.ID != ws.ID || again.Description != "third" || !again.CreatedAt.Equal(ws.CreatedAt) {
		t.Fatalf("re-create: %+v %v", again, err)
	}
	// A different name at the same path is refused.
	_, err = e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "team_b", StoragePath: ws.Dir})
	if fe := fieldErr(t, err); fe.Attr != "storage_path" || !strings.Contains(fe.Msg, "team_a") {
		t.Errorf("different name: %v", err)
	}

	// Explicit relative storage_path resolves against the work dir.
	custom, err := e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "custom", StoragePath: "stores/custom"})
	if err != nil || custom.Dir != filepath.Join(workDir, "stores", "custom") || custom.StoragePath != "stores/custom" || custom.ID == ws.ID {
		t.Fatalf("custom path: %+v %v", custom, err)
	}

	if err := e.DeleteWorkspace(ctx, ws.ID, false); err != nil {
		t.Fatalf("delete empty workspace: %v", err)
	}
	if _, err := os.Stat(ws.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace dir still there: %v", err)
	}
	if _, err := e.ReadWorkspace(ctx, ws.ID); !engine.IsNotFound(err) {
		t.Errorf("read deleted: %v", err)
	}
	if err := e.DeleteWorkspace(ctx, ws.ID, false); err != nil {
		t.Errorf("deleting a missing workspace must succeed: %v", err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(ws.Dir), ".*.*"))
	if len(leftovers) != 0 {
		t.Errorf("leftovers next to the deleted workspace: %v", leftovers)
	}
}

func TestWorkspaceErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	workDir := t.TempDir()
	e := newEngine(t, workDir)
	file := filepath.Join(workDir, "afile")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		spec engine.WorkspaceSpec
		attr string
	}{
		{"name too short", engine.WorkspaceSpec{Name: "ab"}, "name"},
		{"name with slash", engine.WorkspaceSpec{Name: "a/b/c"}, "name"},
		{"name starting with dash", engine.WorkspaceSpec{Name: "-abc"}, "name"},
		{"storage path is a file", engine.WorkspaceSpec{Name: "abc", StoragePath: file}, "storage_path"},
		{"storage path under a file", engine.WorkspaceSpec{Name: "abc", StoragePath: filepath.Join(file, "ws")}, "storage_path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.CreateWorkspace(ctx, tt.spec)
			if fe := fieldErr(t, err); fe.Attr != tt.attr {
				t.Errorf("Attr = %q, want %q (%v)", fe.Attr, tt.attr, err)
			}
		})
	}
	if _, err := e.ReadWorkspace(ctx, "relative/path"); err == nil {
		t.Error("a relative workspace id was accepted")
	}
}

func TestDeleteWorkspaceWithRuns(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	ctx := context.Background()
	src := writeSource(t, map[string]string{"s.py": pidScript + "time.sleep(30)\n", "quick.py": "print('ok')\n"})

	done := te.submit(t, te.request(src, "quick.py"))
	if r, err := waitRun(t, te.e, done.ID, 30*time.Second); err != nil || r.Status != run.Completed {
		t.Fatalf("quick run: %+v %v", r, err)
	}
	err := te.e.DeleteWorkspace(ctx, te.ws, false)
	if err == nil || !strings.Contains(err.Error(), "deletion_policy") || !strings.Contains(err.Error(), "1 run") {
		t.Fatalf("delete without force: %v", err)
	}

	// With force it still refuses while a run is active.
	active := te.submit(t, te.request(src, "s.py"))
	readPID(t, active)
	if err := te.e.DeleteWorkspace(ctx, te.ws, true); err == nil || !strings.Contains(err.Error(), "active") {
		t.Fatalf("delete with an active run: %v", err)
	}
	if _, err := te.e.CancelRun(ctx, active.ID); err != nil {
		t.Fatal(err)
	}

	if err := te.e.DeleteWorkspace(ctx, te.ws, true); err != nil {
		t.Fatalf("delete with force: %v", err)
	}
	if _, err := os.Stat(te.wsDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace dir still there: %v", err)
	}
}

// --- run configurations -------------------------------------------------------

func TestRunConfigLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEngine(t, t.TempDir())
	ws, err := e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "ws1"})
	if err != nil {
		t.Fatal(err)
	}
	spec := engine.RunConfigSpec{
		Name:                 "train.cpu",
		Environment:          env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: "/usr/bin/python3"}},
		EnvironmentVariables: map[string]string{"A": "1"},
	}
	rc, err := e.PutRunConfig(ctx, ws.ID, spec)
	if err != nil {
		t.Fatal(err)
	}
	if rc.ID != ws.ID+"/runconfigs/train.cpu" || rc.WorkspaceID != ws.ID {
		t.Errorf("ids: %s %s", rc.ID, rc.WorkspaceID)
	}
	// Defaults are filled as Azure does.
	if rc.Spec.Framework != "Python" || rc.Spec.Communicator != "None" || rc.Spec.NodeCount != 1 {
		t.Errorf("defaults: %+v", rc.Spec)
	}
	if rc.EnvironmentHash != spec.Environment.Hash() {
		t.Errorf("environment hash %s, want %s", rc.EnvironmentHash, spec.Environment.Hash())
	}

	read, err := e.ReadRunConfig(ctx, rc.ID)
	if err != nil || read.Spec.EnvironmentVariables["A"] != "1" || read.Spec.Environment.Py().InterpreterPath != "/usr/bin/python3" {
		t.Fatalf("read: %+v %v", read, err)
	}

	spec.Environment.Python.InterpreterPath = "/opt/python3"
	spec.MaxRunDurationSeconds = 60
	upd, err := e.PutRunConfig(ctx, ws.ID, spec)
	if err != nil || upd.Spec.MaxRunDurationSeconds != 60 || upd.EnvironmentHash == rc.EnvironmentHash {
		t.Fatalf("update: %+v %v", upd, err)
	}

	wsID, name, err := engine.ParseRunConfigID(rc.ID)
	if err != nil || wsID != ws.ID || name != "train.cpu" {
		t.Errorf("ParseRunConfigID = %q %q %v", wsID, name, err)
	}
	for _, bad := range []string{"train", "relative/runconfigs/x", ws.ID + "/runconfigs/", ws.ID + "/runconfigs/bad name"} {
		if _, _, err := engine.ParseRunConfigID(bad); err == nil {
			t.Errorf("ParseRunConfigID(%q) succeeded", bad)
		}
	}

	if err := e.DeleteRunConfig(ctx, rc.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ReadRunConfig(ctx, rc.ID); !engine.IsNotFound(err) {
		t.Errorf("read deleted: %v", err)
	}
	if err := e.DeleteRunConfig(ctx, rc.ID); err != nil {
		t.Errorf("deleting twice: %v", err)
	}
}

func TestRunConfigValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEngine(t, t.TempDir())
	ws, err := e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "ws1"})
	if err != nil {
		t.Fatal(err)
	}
	valid := func() engine.RunConfigSpec {
		return engine.RunConfigSpec{Name: "rc", Framework: "Python", Communicator: "None", NodeCount: 1,
			Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true}}}
	}
	tests := []struct {
		name   string
		mutate func(*engine.RunConfigSpec)
		attr   string
	}{
		{"unknown framework", func(s *engine.RunConfigSpec) { s.Framework = "TensorFlow" }, "framework"},
		{"unknown communicator", func(s *engine.RunConfigSpec) { s.Communicator = "Carrier-Pigeon" }, "communicator"},
		{"negative node_count", func(s *engine.RunConfigSpec) { s.NodeCount = -1 }, "node_count"},
		{"negative max duration", func(s *engine.RunConfigSpec) { s.MaxRunDurationSeconds = -5 }, "max_run_duration_seconds"},
		{"bad name", func(s *engine.RunConfigSpec) { s.Name = "has space" }, "name"},
		{"bad env var name", func(s *engine.RunConfigSpec) { s.EnvironmentVariables = map[string]string{"1BAD": "x"} }, "environment_variables"},
		{"docker without image", func(s *engine.RunConfigSpec) { s.Environment.Docker = &env.Docker{Enabled: true} }, "environment.docker.base_image"},
		{"pip option as package", func(s *engine.RunConfigSpec) {
			s.Environment.Python = &env.Python{Conda: &env.CondaDependencies{PipPackages: []string{"numpy", "--pre"}}}
		}, "environment.python.conda_dependencies.pip_packages[1]"},
		{"not a PEP 508 requirement", func(s *engine.RunConfigSpec) {
			s.Environment.Python = &env.Python{Conda: &env.CondaDependencies{PipPackages: []string{"numpy", "scikit-learn=1.5"}}}
		}, "environment.python.conda_dependencies.pip_packages[1]"},
		{"user-managed with dependencies", func(s *engine.RunConfigSpec) {
			s.Environment.Python.Conda = &env.CondaDependencies{PipPackages: []string{"numpy"}}
		}, "environment.python.conda_dependencies"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := valid()
			tt.mutate(&spec)
			_, err := e.PutRunConfig(ctx, ws.ID, spec)
			if fe := fieldErr(t, err); fe.Attr != tt.attr {
				t.Errorf("Attr = %q, want %q (%v)", fe.Attr, tt.attr, err)
			}
		})
	}
	if _, err := e.ReadRunConfig(ctx, engine.RunConfigID(ws.ID, "rc")); !engine.IsNotFound(err) {
		t.Errorf("an invalid configuration was stored: %v", err)
	}

	// node_count = 0 is invalid for Validate; PutRunConfig treats 0 as "unset"
	// and defaults it to 1 (the provider's schema validator rejects an explicit 0).
	spec := valid()
	spec.NodeCount = 0
	if fe := fieldErr(t, spec.Validate()); fe.Attr != "node_count" {
		t.Errorf("Validate node_count 0: %v", fe)
	}

	// An unknown workspace is the workspace_id's fault.
	_, err = e.PutRunConfig(ctx, filepath.Join(t.TempDir(), "nope"), valid())
	if fe := fieldErr(t, err); fe.Attr != "workspace_id" {
		t.Errorf("unknown workspace: %v", err)
	}
}

// --- runs ------------------------------------------------------------------

const trainScript = `import json, os, sys
import aml_run
print("hello from train.py", flush=True)
print("args=" + json.dumps(sys.argv[1:]))
print("FROM_RC=" + os.environ.get("FROM_RC", "<unset>"))
print("SHARED=" + os.environ.get("SHARED", "<unset>"))
print("cwd_has_data=" + str(os.path.exists(os.path.join("data", "train.csv"))))
aml_run.log("accuracy", 0.5, step=0)
aml_run.log("accuracy", 0.9, step=1)
with open(os.environ["AML_METRICS_FILE"], "a") as f:
    f.write(json.dumps({"name": "loss", "value": 0.75, "step": 0}) + "\n")
    f.write("this line is not json\n")
    f.write(json.dumps({"name": "loss", "value": 0.25, "step": 1}) + "\n")
with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "model.txt"), "w") as f:
    f.write("weights for " + os.environ["AML_RUN_ID"])
print("done", flush=True)
`

func TestRunCompletes(t *testing.T) {
	t.Parallel()
	te := setup(t, func(s *engine.RunConfigSpec) {
		// Resolve "python3" on PATH like a user who names no interpreter.
		s.Environment.Python.InterpreterPath = ""
		s.EnvironmentVariables = map[string]string{"FROM_RC": "rc-value", "SHARED": "from-rc"}
	})
	ctx := context.Background()
	src := writeSource(t, map[string]string{"train.py": trainScript, "data/train.csv": "a,b\n1,2\n", ".amlignore": "*.log\n", "debug.log": "x"})
	plan, _, err := te.e.PlanSnapshot(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	req := te.request(src, "train.py", "--lr", "0.1", "two words")
	req.EnvironmentVariables = map[string]string{"SHARED": "from-request"}
	req.Tags = map[string]string{"team": "a"}
	req.PlannedSnapshotHash = plan.Hash

	sub := te.submit(t, req)
	if sub.Adopted || sub.RunID == "" || sub.ID != te.ws+"/runs/"+sub.RunID || sub.Status.Terminal() && sub.Status != run.Completed {
		t.Fatalf("submitted %+v", sub)
	}
	if ws, id, err := engine.ParseRunID(sub.ID); err != nil || ws != te.ws || id != sub.RunID {
		t.Errorf("ParseRunID = %q %q %v", ws, id, err)
	}

	r, err := waitRun(t, te.e, sub.ID, 30*time.Second)
	if err != nil {
		t.Fatalf("WaitRun: %v", err)
	}
	if r.Status != run.Completed || r.FailureReason != "" || r.ExitCode == nil || *r.ExitCode != 0 {
		t.Fatalf("run = %+v", r)
	}
	if r.Metrics["accuracy"] != 0.9 || r.Metrics["loss"] != 0.25 || len(r.Metrics) != 2 {
		t.Errorf("metrics = %v", r.Metrics)
	}
	if !slices.Equal(r.OutputFiles, []string{"model.txt"}) {
		t.Errorf("outputs = %v", r.OutputFiles)
	}
	if b, err := os.ReadFile(filepath.Join(r.OutputsPath, "model.txt")); err != nil || string(b) != "weights for "+r.RunID {
		t.Errorf("outputs/model.txt = %q, %v", b, err)
	}
	for _, want := range []string{
		"hello from train.py",
		`args=["--lr", "0.1", "two words"]`,
		"FROM_RC=rc-value",
		"SHARED=from-request", // the request's variables win over the configuration's
		"cwd_has_data=True",
		"done",
	} {
		if !strings.Contains(r.LogTail, want) {
			t.Errorf("log tail lacks %q:\n%s", want, r.LogTail)
		}
	}
	if b, err := os.ReadFile(r.LogPath); err != nil || !strings.Contains(string(b), "hello from train.py") {
		t.Errorf("log file %s: %v", r.LogPath, err)
	}
	if r.SnapshotHash != plan.Hash || r.SnapshotFiles != 3 || r.SnapshotFiles != plan.Files {
		t.Errorf("snapshot %s/%d, plan %s/%d", r.SnapshotHash, r.SnapshotFiles, plan.Hash, plan.Files)
	}
	rc, _ := te.e.ReadRunConfig(ctx, te.rc)
	if r.EnvironmentHash != rc.EnvironmentHash || r.RunConfigName != "rc" || r.Experiment != "exp" || r.ComputeTarget != "local" || r.Tags["team"] != "a" {
		t.Errorf("run = %+v", r)
	}
	if r.StartTime == nil || r.EndTime == nil || r.EndTime.Before(*r.StartTime) || r.DurationSeconds <= 0 {
		t.Errorf("times: %v %v %v", r.StartTime, r.EndTime, r.DurationSeconds)
	}

	// Read of a finished run gives the same answer, from the store alone.
	read, err := te.e.ReadRun(ctx, sub.ID)
	if err != nil || read.Status != run.Completed || read.Metrics["accuracy"] != 0.9 || !slices.Equal(read.OutputFiles, r.OutputFiles) {
		t.Errorf("ReadRun: %+v %v", read, err)
	}
	// A second WaitRun of a finished run returns at once.
	if again, err := waitRun(t, te.e, sub.ID, 5*time.Second); err != nil || again.Status != run.Completed {
		t.Errorf("second WaitRun: %+v %v", again, err)
	}
	if n := runCount(t, te.e, te.ws); n != 1 {
		t.Errorf("RunCount = %d", n)
	}
}

func TestRunFails(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	src := writeSource(t, map[string]string{"fail.py": "import sys\nprint('about to fail', flush=True)\nsys.exit(3)\n"})
	sub := te.submit(t, te.request(src, "fail.py"))
	r, err := waitRun(t, te.e, sub.ID, 30*time.Second)
	var rf *engine.RunFailedError
	if !errors.As(err, &rf) {
		t.Fatalf("err = %v (%T), want *engine.RunFailedError", err, err)
	}
	if rf.Run.RunID != sub.RunID {
		t.Errorf("error carries run %s", rf.Run.RunID)
	}
	if r.Status != run.Failed || r.FailureReason != run.ReasonNonzeroExit || r.ExitCode == nil || *r.ExitCode != 3 {
		t.Fatalf("run = %+v", r)
	}
	for _, want := range []string{"about to fail", "exit code 3", "nonzero_exit", r.LogPath} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%s", want, err)
		}
	}
}

func TestMaxRunDuration(t *testing.T) {
	t.Parallel()
	te := setup(t, func(s *engine.RunConfigSpec) { s.MaxRunDurationSeconds = 1 })
	src := writeSource(t, map[string]string{"sleep.py": pidScript + "time.sleep(30)\n"})
	began := time.Now()
	sub := te.submit(t, te.request(src, "sleep.py"))
	r, err := waitRun(t, te.e, sub.ID, 20*time.Second)
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("a 1 s run took %s to stop", took)
	}
	var rf *engine.RunFailedError
	if !errors.As(err, &rf) {
		t.Fatalf("err = %v, want *engine.RunFailedError", err)
	}
	if r.Status != run.Failed || r.FailureReason != run.ReasonTimedOut {
		t.Fatalf("run = %+v", r)
	}
	if !strings.Contains(r.LogTail, "max_run_duration_seconds") {
		t.Errorf("log tail does not say why:\n%s", r.LogTail)
	}
	assertGone(t, readPID(t, r))
}

func TestCancelRun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		script  string
		atLeast time.Duration // the grace period, for a script that ignores SIGTERM
	}{
		{"sleeping script", pidScript + "time.sleep(30)\n", 0},
		{"script ignoring SIGTERM", pidScript + "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ignoring', flush=True)\nfor _ in range(300):\n    time.sleep(0.1)\n", 1900 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			te := setup(t, nil)
			ctx := context.Background()
			src := writeSource(t, map[string]string{"s.py": tt.script})
			sub := te.submit(t, te.request(src, "s.py"))
			pid := readPID(t, sub)
			if tt.atLeast > 0 {
				// Make sure the handler is installed before we cancel.
				testutil.WaitFor(t, 10*time.Second, "the script to ignore SIGTERM", func() bool {
					b, _ := os.ReadFile(sub.LogPath)
					return strings.Contains(string(b), "ignoring")
				})
			}
			waitStatus(t, te.e, sub.ID, run.Running)
			began := time.Now()
			r, err := te.e.CancelRun(ctx, sub.ID)
			took := time.Since(began)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != run.Canceled || r.FailureReason != run.ReasonCanceled {
				t.Fatalf("run = %+v", r)
			}
			if took < tt.atLeast || took > 15*time.Second {
				t.Errorf("cancel took %s (grace 2s)", took)
			}
			assertGone(t, pid)

			// The record is kept; waiting on it reports the cancellation.
			got, err := waitRun(t, te.e, sub.ID, 5*time.Second)
			var rf *engine.RunFailedError
			if !errors.As(err, &rf) || got.Status != run.Canceled {
				t.Errorf("WaitRun after cancel: %+v %v", got, err)
			}
			// Canceling again is harmless.
			if again, err := te.e.CancelRun(ctx, sub.ID); err != nil || again.Status != run.Canceled {
				t.Errorf("second cancel: %+v %v", again, err)
			}
		})
	}
}

func TestWaitRunTimeoutCancels(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	src := writeSource(t, map[string]string{"sleep.py": pidScript + "time.sleep(30)\n"})
	sub := te.submit(t, te.request(src, "sleep.py"))
	pid := readPID(t, sub)
	began := time.Now()
	r, err := waitRun(t, te.e, sub.ID, time.Second)
	if err == nil {
		t.Fatal("WaitRun of a 30 s run under a 1 s context succeeded")
	}
	if took := time.Since(began); took > 15*time.Second {
		t.Errorf("WaitRun took %s", took)
	}
	var rf *engine.RunFailedError
	if !errors.As(err, &rf) || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("err = %v", err)
	}
	if r.Status != run.Canceled || r.FailureReason != run.ReasonTimedOut {
		t.Fatalf("run = %+v", r)
	}
	assertGone(t, pid)
	if read, err := te.e.ReadRun(context.Background(), sub.ID); err != nil || read.Status != run.Canceled || read.FailureReason != run.ReasonTimedOut {
		t.Errorf("stored: %+v %v", read, err)
	}
}

// A run finished while nobody watched; a cancel (destroy) that arrives later must
// record the real outcome, not leave the run "CancelRequested" forever.
func TestCancelAfterUnobservedCompletion(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	ctx := context.Background()
	src := writeSource(t, map[string]string{"quick.py": "print('quick')\n"})
	sub := te.submit(t, te.request(src, "quick.py"))
	statusFile := filepath.Join(filepath.Dir(sub.OutputsPath), ".aml", "status.json")
	testutil.WaitFor(t, 15*time.Second, "the supervisor to record completion", func() bool {
		b, _ := os.ReadFile(statusFile)
		return bytes.Contains(b, []byte(`"Completed"`))
	})
	r, err := te.e.CancelRun(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != run.Completed {
		t.Fatalf("cancel of a finished run left status %s", r.Status)
	}
	if err := te.e.ReleaseRun(ctx, sub.ID); err != nil {
		t.Fatal(err)
	}
	if err := te.e.DeleteWorkspace(ctx, te.ws, true); err != nil {
		t.Fatalf("the finished run blocks deletion: %v", err)
	}
}

func TestReleaseRun(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	ctx := context.Background()
	src := writeSource(t, map[string]string{"sleep.py": pidScript + "time.sleep(30)\n"})
	req := te.request(src, "sleep.py")
	sub := te.submit(t, req)
	pid := readPID(t, sub)
	if err := te.e.ReleaseRun(ctx, sub.ID); err != nil {
		t.Fatal(err)
	}
	assertGone(t, pid)
	r, err := te.e.ReadRun(ctx, sub.ID)
	if err != nil || r.Status != run.Canceled {
		t.Fatalf("released run is kept as history: %+v %v", r, err)
	}
	if err := te.e.ReleaseRun(ctx, te.ws+"/runs/unknown_1"); err != nil {
		t.Errorf("releasing an unknown run: %v", err)
	}
	// A released run is never adopted by a later identical submission.
	next := te.submit(t, req)
	if next.Adopted || next.RunID == sub.RunID {
		t.Errorf("released run was adopted: %+v", next)
	}
	if _, err := te.e.CancelRun(ctx, next.ID); err != nil {
		t.Fatal(err)
	}
}

// The supervisor is detached: the run outlives the Engine (the provider process)
// that submitted it, and a new Engine re-attaches on Read.
func TestRunSurvivesItsEngine(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	ctx := context.Background()
	src := writeSource(t, map[string]string{"slow.py": pidScript + "time.sleep(1.5)\nimport aml_run\naml_run.log('late', 42)\nprint('finished')\n"})
	sub := te.submit(t, te.request(src, "slow.py"))
	readPID(t, sub)
	te.e.Close()

	e2 := newEngine(t, te.workDir)
	waitStatus(t, e2, sub.ID, run.Running)
	r, err := waitRun(t, e2, sub.ID, 30*time.Second)
	if err != nil || r.Status != run.Completed || r.Metrics["late"] != 42 || !strings.Contains(r.LogTail, "finished") {
		t.Fatalf("run = %+v, %v", r, err)
	}
	// And the first engine, reopened, agrees from the store.
	r1, err := te.e.ReadRun(ctx, sub.ID)
	if err != nil || r1.Status != run.Completed || r1.Metrics["late"] != 42 {
		t.Errorf("first engine after reopen: %+v %v", r1, err)
	}
}

// An apply killed after submitting (before Terraform saved state) leaves a run
// that the next apply adopts instead of submitting twice.
// submitInChild submits req from a child provider process (childEnv) that exits
// without acknowledging the run, as an interrupted apply, and returns the run's
// id; the run is stopped at cleanup.
func submitInChild(t *testing.T, te *testEnv, req engine.RunRequest) string {
	t.Helper()
	job, err := json.Marshal(childJob{WorkDir: te.workDir, StatCacheDir: t.TempDir(), Request: req})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(selfExe())
	cmd.Env = append(os.Environ(), childEnv+"="+string(job))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("submitting child: %v\n%s", err, stderr.String())
	}
	childID := strings.TrimSpace(string(out))
	stopAtCleanup(t, te.e, childID)
	return childID
}

func TestAdoptOrphanedRun(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	ctx := context.Background()
	src := writeSource(t, map[string]string{"slow.py": pidScript + "time.sleep(1)\nimport aml_run\naml_run.log('acc', 0.8)\n"})
	req := te.request(src, "slow.py", "--epochs", "1")
	req.EnvironmentVariables = map[string]string{"X": "1"}
	req.Triggers = map[string]string{"v": "1"}

	childID := submitInChild(t, te, req)
	if n := runCount(t, te.e, te.ws); n != 1 {
		t.Fatalf("after the child: %d runs", n)
	}

	// A different submission is not the orphan.
	other := req
	other.Triggers = map[string]string{"v": "2"}
	o := te.submit(t, other)
	if o.Adopted || o.ID == childID {
		t.Fatalf("a different submission adopted the orphan: %+v", o)
	}
	if _, err := te.e.CancelRun(ctx, o.ID); err != nil {
		t.Fatal(err)
	}

	adopted := te.submit(t, req)
	if !adopted.Adopted || adopted.ID != childID {
		t.Fatalf("identical submission: adopted=%v id=%s, want the child's %s", adopted.Adopted, adopted.ID, childID)
	}
	if n := runCount(t, te.e, te.ws); n != 2 {
		t.Errorf("runs = %d, want 2 (the orphan and the different one)", n)
	}
	r, err := waitRun(t, te.e, adopted.ID, 30*time.Second)
	if err != nil || r.Status != run.Completed || r.Metrics["acc"] != 0.8 {
		t.Fatalf("adopted run: %+v %v", r, err)
	}

	if err := te.e.AcknowledgeRun(ctx, adopted.ID); err != nil {
		t.Fatal(err)
	}
	fresh := te.submit(t, req)
	if fresh.Adopted || fresh.ID == childID {
		t.Fatalf("after AcknowledgeRun an identical submission must be a new run: %+v", fresh)
	}
	if n := runCount(t, te.e, te.ws); n != 3 {
		t.Errorf("runs = %d, want 3", n)
	}
	if r, err := waitRun(t, te.e, fresh.ID, 30*time.Second); err != nil || r.Status != run.Completed {
		t.Errorf("fresh run: %+v %v", r, err)
	}
}

func TestLostSupervisor(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	ctx := context.Background()
	src := writeSource(t, map[string]string{"sleep.py": pidScript + "time.sleep(30)\n"})
	sub := te.submit(t, te.request(src, "sleep.py"))
	pid := readPID(t, sub)

	var st struct {
		Status        run.Status `json:"status"`
		SupervisorPID int        `json:"supervisor_pid"`
		ChildPID      int        `json:"child_pid"`
	}
	statusFile := filepath.Join(filepath.Dir(sub.OutputsPath), ".aml", "status.json")
	testutil.WaitFor(t, 10*time.Second, "the supervisor to record the running child", func() bool {
		b, err := os.ReadFile(statusFile)
		return err == nil && json.Unmarshal(b, &st) == nil && st.Status == run.Running && st.SupervisorPID > 0
	})
	if st.ChildPID != pid {
		t.Errorf("status.json child_pid %d, script pid %d", st.ChildPID, pid)
	}
	if err := syscall.Kill(st.SupervisorPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the supervisor to die", func() bool { return testutil.ProcessGone(st.SupervisorPID) })

	r, err := te.e.ReadRun(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != run.Failed || r.FailureReason != run.ReasonLost {
		t.Fatalf("run = %+v, want Failed/lost", r)
	}
	if !strings.Contains(r.Message, strconv.Itoa(st.SupervisorPID)) {
		t.Errorf("message %q does not name the supervisor", r.Message)
	}
	assertGone(t, pid)
	if _, err := waitRun(t, te.e, sub.ID, 5*time.Second); err == nil {
		t.Error("WaitRun of a lost run succeeded")
	}
}

func TestSubmitBadInput(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	ctx := context.Background()
	src := writeSource(t, map[string]string{"train.py": "print(1)\n", "secret.py": "print(2)\n", ".amlignore": "secret.py\n"})
	plan, _, err := te.e.PlanSnapshot(ctx, src)
	if err != nil {
		t.Fatal(err)
	}

	other, err := te.e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "other-ws"})
	if err != nil {
		t.Fatal(err)
	}
	otherRC, err := te.e.PutRunConfig(ctx, other.ID, engine.RunConfigSpec{Name: "rc", Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true}}})
	if err != nil {
		t.Fatal(err)
	}
	put := func(name string, mutate func(*engine.RunConfigSpec)) string {
		spec := engine.RunConfigSpec{Name: name, Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: python(t)}}}
		mutate(&spec)
		rc, err := te.e.PutRunConfig(ctx, te.ws, spec)
		if err != nil {
			t.Fatal(err)
		}
		return rc.ID
	}
	missingInterp := put("missing-interp", func(s *engine.RunConfigSpec) {
		s.Environment.Python.InterpreterPath = filepath.Join(t.TempDir(), "no", "python3")
	})
	missingPython := put("missing-python", func(s *engine.RunConfigSpec) {
		s.Environment.Python.UserManagedDependencies = false
		s.Environment.Python.Conda = &env.CondaDependencies{PythonVersion: "3.99"}
	})
	condaWithoutConda := put("conda-without-conda", func(s *engine.RunConfigSpec) {
		s.Environment.Python.UserManagedDependencies = false
		s.Environment.Python.Conda = &env.CondaDependencies{CondaPackages: []string{"numpy"}}
	})
	twoNodes := put("two-nodes", func(s *engine.RunConfigSpec) { s.NodeCount = 2 })

	tests := []struct {
		name    string
		mutate  func(*engine.RunRequest)
		attr    string
		mention string
	}{
		{"script excluded by .amlignore", func(r *engine.RunRequest) { r.Script = "secret.py" }, "script", ".amlignore"},
		{"script missing", func(r *engine.RunRequest) { r.Script = "nope.py" }, "script", "nope.py"},
		{"script outside the source", func(r *engine.RunRequest) { r.Script = "../train.py" }, "script", "../train.py"},
		{"script and command", func(r *engine.RunRequest) { r.Command = []string{"true"} }, "script", "exactly one"},
		{"neither script nor command", func(r *engine.RunRequest) { r.Script = "" }, "script", "exactly one"},
		{"unknown compute target", func(r *engine.RunRequest) { r.ComputeTarget = "gpu-cluster" }, "compute_target", "gpu-cluster"},
		{"run configuration of another workspace", func(r *engine.RunRequest) { r.RunConfigID = otherRC.ID }, "run_configuration_id", other.ID},
		{"unknown run configuration", func(r *engine.RunRequest) { r.RunConfigID = engine.RunConfigID(te.ws, "ghost") }, "run_configuration_id", "ghost"},
		{"malformed run configuration id", func(r *engine.RunRequest) { r.RunConfigID = "rc" }, "run_configuration_id", "rc"},
		{"multi-node configuration on local", func(r *engine.RunRequest) { r.RunConfigID = twoNodes }, "run_configuration_id", "node_count = 2"},
		{"missing source directory", func(r *engine.RunRequest) { r.SourceDirectory = filepath.Join(src, "missing") }, "source_directory", "missing"},
		{"source changed since plan", func(r *engine.RunRequest) { r.PlannedSnapshotHash = "sha256:" + strings.Repeat("0", 64) }, "source_directory", "source changed since plan"},
		{"interpreter missing", func(r *engine.RunRequest) { r.RunConfigID = missingInterp }, "run_configuration_id", "environment.python.interpreter_path: \""},
		{"python version no interpreter provides", func(r *engine.RunRequest) { r.RunConfigID = missingPython }, "run_configuration_id", "environment.python.conda_dependencies.python_version: no interpreter"},
		{"conda packages without conda", func(r *engine.RunRequest) { r.RunConfigID = condaWithoutConda }, "run_configuration_id", "conda_dependencies.conda_packages: conda packages numpy need micromamba"},
		{"bad experiment name", func(r *engine.RunRequest) { r.Experiment = "my experiment" }, "experiment_name", "my experiment"},
		{"unknown workspace", func(r *engine.RunRequest) { r.WorkspaceID = filepath.Join(t.TempDir(), "ghost") }, "workspace_id", "ghost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := te.request(src, "train.py")
			req.PlannedSnapshotHash = plan.Hash
			tt.mutate(&req)
			r, err := te.e.SubmitRun(ctx, req)
			if err == nil {
				stopAtCleanup(t, te.e, r.ID)
				t.Fatalf("SubmitRun succeeded: %+v", r)
			}
			fe := fieldErr(t, err)
			if fe.Attr != tt.attr {
				t.Errorf("Attr = %q, want %q (%v)", fe.Attr, tt.attr, err)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not mention %q", err, tt.mention)
			}
			if n := runCount(t, te.e, te.ws); n != 0 {
				t.Errorf("a rejected submission wrote %d run record(s)", n)
			}
		})
	}
	if n := runCount(t, te.e, other.ID); n != 0 {
		t.Errorf("the other workspace has %d runs", n)
	}
	entries, _ := os.ReadDir(filepath.Join(te.wsDir, "runs"))
	if len(entries) != 0 {
		t.Errorf("rejected submissions left run directories: %v", entries)
	}
}

func TestSourceChangedAfterPlan(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	ctx := context.Background()
	src := writeSource(t, map[string]string{"train.py": "print('v1')\n"})
	plan, _, err := te.e.PlanSnapshot(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "train.py"), []byte("print('v2 is longer')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	req := te.request(src, "train.py")
	req.PlannedSnapshotHash = plan.Hash
	_, err = te.e.SubmitRun(ctx, req)
	if err == nil || !strings.Contains(err.Error(), "source changed since plan") {
		t.Fatalf("err = %v", err)
	}
	if fe := fieldErr(t, err); fe.Attr != "source_directory" {
		t.Errorf("Attr = %q", fe.Attr)
	}
	if n := runCount(t, te.e, te.ws); n != 0 {
		t.Errorf("%d runs recorded", n)
	}
	// A re-plan makes it submittable.
	plan2, _, _ := te.e.PlanSnapshot(ctx, src)
	req.PlannedSnapshotHash = plan2.Hash
	r := te.submit(t, req)
	if got, err := waitRun(t, te.e, r.ID, 30*time.Second); err != nil || !strings.Contains(got.LogTail, "v2 is longer") {
		t.Errorf("re-planned run: %+v %v", got, err)
	}
}

func TestCommandRun(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	src := writeSource(t, map[string]string{"data.txt": "payload\n"})
	req := te.request(src, "")
	req.Command = []string{"/bin/sh", "-c", `cat data.txt; echo "arg=$1"; echo "{\"name\":\"n\",\"value\":5}" >> "$AML_METRICS_FILE"`, "sh"}
	req.Arguments = []string{"given"}
	r := te.submit(t, req)
	got, err := waitRun(t, te.e, r.ID, 30*time.Second)
	if err != nil || got.Status != run.Completed || got.Metrics["n"] != 5 || !strings.Contains(got.LogTail, "payload") || !strings.Contains(got.LogTail, "arg=given") {
		t.Fatalf("run = %+v, %v", got, err)
	}
}

func TestConcurrentRuns(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	src := writeSource(t, map[string]string{"idx.py": `import os, sys, aml_run
i = int(sys.argv[1])
aml_run.log("idx", i)
aml_run.log("square", i * i)
with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "out%d.txt" % i), "w") as f:
    f.write(str(i))
print("run", i)
`})
	const n = 4
	runs, errs := runConcurrently(te.e, n, time.Minute, func(i int) engine.RunRequest {
		return te.request(src, "idx.py", strconv.Itoa(i))
	})
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Errorf("run %d: %v", i, errs[i])
			continue
		}
		r := runs[i]
		stopAtCleanup(t, te.e, r.ID)
		if r.Status != run.Completed || r.Metrics["idx"] != float64(i) || r.Metrics["square"] != float64(i*i) {
			t.Errorf("run %d: status %s metrics %v", i, r.Status, r.Metrics)
		}
		if want := fmt.Sprintf("out%d.txt", i); !slices.Equal(r.OutputFiles, []string{want}) {
			t.Errorf("run %d outputs %v", i, r.OutputFiles)
		}
		if seen[r.RunID] {
			t.Errorf("run id %s reused", r.RunID)
		}
		seen[r.RunID] = true
	}
	if got := runCount(t, te.e, te.ws); got != n {
		t.Errorf("RunCount = %d, want %d", got, n)
	}
}

// Terraform creates count = 2 instances of one identical aml_experiment_run in
// parallel in one provider process: that is two runs, not one run adopted twice.
func TestConcurrentIdenticalSubmissions(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	src := writeSource(t, map[string]string{"s.py": "import time, aml_run\ntime.sleep(0.3)\naml_run.log('x', 1)\n"})
	req := te.request(src, "s.py")
	const n = 3
	var wg sync.WaitGroup
	runs := make([]*engine.Run, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runs[i], errs[i] = te.e.SubmitRun(context.Background(), req)
		}()
	}
	wg.Wait()
	ids := map[string]bool{}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("submission %d: %v", i, errs[i])
		}
		stopAtCleanup(t, te.e, runs[i].ID)
		if runs[i].Adopted {
			t.Errorf("submission %d adopted a run of its own process", i)
		}
		ids[runs[i].ID] = true
	}
	if len(ids) != n {
		t.Fatalf("%d submissions made %d distinct runs", n, len(ids))
	}
	for id := range ids {
		r, err := waitRun(t, te.e, id, 30*time.Second)
		if err != nil || r.Status != run.Completed || r.Metrics["x"] != 1 {
			t.Errorf("run %s: %+v %v", id, r, err)
		}
	}
}

// The engine is the domain: it must not depend on Terraform's plugin libraries.
func TestEngineImportsNoTerraformPlugin(t *testing.T) {
	t.Parallel()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH")
	}
	out, err := exec.Command(gobin, "list", "-deps", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/openaml/terraform-provider-aml/internal/engine") {
		t.Fatalf("go list did not list the engine itself:\n%s", out)
	}
	for _, d := range deps {
		if strings.Contains(d, "terraform-plugin") {
			t.Errorf("the engine depends on %s", d)
		}
	}
}

// The workspace's disk fills up while a run is staged: a clear error, and no
// half-made run directory is left behind.
func TestSubmitDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs to fill up needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	e := newEngine(t, t.TempDir())
	ctx := context.Background()
	ws, err := e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "full", StoragePath: filepath.Join(mnt, "ws")})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := e.PutRunConfig(ctx, ws.ID, engine.RunConfigSpec{Name: "rc", Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: python(t)}}})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 1800<<10) // fits once (the blob), not twice (the run directory)
	for i := range big {
		big[i] = byte(i * 7919 % 251)
	}
	src := writeSource(t, map[string]string{"train.py": "print('hi')\n", "data.bin": string(big)})
	_, err = e.SubmitRun(ctx, engine.RunRequest{WorkspaceID: ws.ID, Experiment: "exp", SourceDirectory: src, Script: "train.py", ComputeTarget: engine.LocalTarget, RunConfigID: rc.ID})
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("submit on a full disk: %v, want an error saying the disk is full", err)
	}
	ents, _ := os.ReadDir(filepath.Join(ws.ID, "runs"))
	if len(ents) != 0 {
		t.Fatalf("a half-staged run directory was left: %v", ents)
	}
}

// runConcurrently submits n runs from as many goroutines at once and waits for
// each (bounded by timeout); runs[i] and errs[i] belong to request i.
func runConcurrently(e *engine.Engine, n int, timeout time.Duration, request func(i int) engine.RunRequest) ([]*engine.Run, []error) {
	var wg sync.WaitGroup
	runs := make([]*engine.Run, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			r, err := e.SubmitRun(ctx, request(i))
			if err != nil {
				errs[i] = err
				return
			}
			runs[i], errs[i] = e.WaitRun(ctx, r.ID)
		}()
	}
	wg.Wait()
	return runs, errs
}

// The plan lists the files changed since the last run of the same submission,
// found by its indexed submission whatever else the experiment holds.
func TestSnapshotChangesSinceLastOfSameSubmission(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	ctx := context.Background()
	src := writeSource(t, map[string]string{"train.py": "print('v1')\n", "data.txt": "d\n"})
	for _, arg := range []string{"a", "b"} {
		req := te.request(src, "train.py")
		req.Arguments = []string{arg}
		r := te.submit(t, req)
		if _, err := waitRun(t, te.e, r.ID, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "train.py"), []byte("print('v2')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, m, err := te.e.PlanSnapshot(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	for arg, want := range map[string][]string{"a": {"changed: train.py"}, "b": {"changed: train.py"}, "new": {}} {
		req := te.request(src, "train.py")
		req.Arguments = []string{arg}
		got, err := te.e.SnapshotChangesSinceLast(ctx, req, m)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("arguments %q: changes = %q, %v; want %q", arg, got, err, want)
		}
	}
}
