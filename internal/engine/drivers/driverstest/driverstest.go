// Package driverstest is the conformance suite every compute target kind runs
// (shaped after Nomad's DriverHarness): the same cases, with real processes, on
// every driver. A kind's test calls Run once with a Target that opens its
// driver.
package driverstest

import (
	"bytes"
	"context"
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
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
)

// Target is the driver under test.
type Target struct {
	// Open returns a driver value for the target. The suite calls it again to
	// recover a run as a new provider process would: a new value, nothing
	// shared but what the target itself keeps.
	Open func(t *testing.T) drivers.Driver
	// Blobs is the engine's blob store the driver reads snapshots from.
	Blobs snapshot.BlobStore
	// Wait bounds each wait for a run (default 60 s).
	Wait time.Duration
	// Launch is how runs get their Python (default: user-managed python3).
	Launch env.Launch
	// Env are variables every run of the target needs (e.g. SPARK_LOCAL_IP).
	Env map[string]string
	// Containers, for runs in Docker (Launch.Docker), lists the containers
	// (running or not) of a run. A script's process ids are then the
	// container's, so "the script ended" is checked as "no container of the
	// run is left"; the suite also mounts its marks directory into the
	// containers.
	Containers func(t *testing.T, runID string) []string
}

// caseScript is the program of every case: a Python script (what every kind
// runs, a Spark driver included) that runs the case's shell script.
const caseScript = `import os, subprocess, sys
sys.exit(subprocess.call(["sh", "-c", os.environ["CONF_SCRIPT"]]))
`

// Run runs every case on the target. Each case starts real runs; whatever is
// still active when a case ends is canceled.
func Run(t *testing.T, tgt Target) {
	if tgt.Wait == 0 {
		tgt.Wait = 60 * time.Second
	}
	if tgt.Launch == (env.Launch{}) {
		tgt.Launch = env.Launch{Interpreter: "python3"}
	}
	h := &harness{tgt: tgt, marks: markDir(t)}
	if d := tgt.Launch.Docker; d != nil {
		dd := *d
		dd.RawArguments = append(append([]string{}, dd.RawArguments...), "--volume", h.marks+":"+h.marks)
		h.tgt.Launch.Docker = &dd
	}
	t.Run("Completes", h.completes)
	t.Run("ScriptLoggers", h.scriptLoggers)
	t.Run("FailsWithExitCode", h.fails)
	t.Run("Cancel", h.cancel)
	t.Run("RecoverInNewDriver", h.recoverInNewDriver)
	t.Run("LostSupervisor", h.lostSupervisor)
	t.Run("ResumableLogs", h.resumableLogs)
	t.Run("BackgroundProcessesStop", h.backgroundProcessesStop)
	t.Run("OutputsListedAsTheyAre", h.outputsListedAsTheyAre)
	t.Run("MultiNode", h.multiNode)
}

type harness struct {
	tgt   Target
	marks string // a directory the run's processes and the test both reach
}

// markDir is a directory every user can write: on an SSH target the run's
// processes run as the host's user, on this same machine.
func markDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "aml-driverstest-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

var seq atomic.Int64

// start launches a shell script as a run of nodes ranks and returns its id,
// handle and execution. The run is canceled when the test ends, if still active.
func (h *harness) start(t *testing.T, drv drivers.Driver, script string, nodes int) (string, drivers.Handle, drivers.Execution) {
	t.Helper()
	ctx := context.Background()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "data.txt"), []byte("conformance\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "case.py"), []byte(caseScript), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := snapshot.Build(ctx, src, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.tgt.Blobs.Ingest(ctx, src, m); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("conf_%d_%d", time.Now().UnixNano(), seq.Add(1))
	vars := map[string]string{"MARKS": h.marks, "CONF_RUN": id, "CONF_SCRIPT": script}
	for k, v := range h.tgt.Env {
		vars[k] = v
	}
	hd, err := drv.Start(ctx, drivers.RunSpec{
		RunID: id, Manifest: m, Blobs: h.tgt.Blobs,
		Program:    drivers.Program{Script: "case.py"},
		Launch:     h.tgt.Launch,
		Experiment: "conformance", Framework: "Python",
		Env:       vars,
		NodeCount: nodes, Grace: 2 * time.Second,
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	ex, err := drv.Recover(ctx, hd)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	t.Cleanup(func() {
		if st, err := ex.Status(ctx); err == nil && st.Status.Active() {
			_ = ex.Cancel(ctx, 0, run.ReasonCanceled)
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			_, _ = ex.Wait(wctx)
		}
	})
	return id, hd, ex
}

func (h *harness) wait(t *testing.T, ex drivers.Execution) drivers.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.tgt.Wait)
	defer cancel()
	st, err := ex.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v (last state %+v)", err, st)
	}
	return st
}

// waitFor polls cond until it holds or the harness's wait limit passes.
func (h *harness) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(h.tgt.Wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", h.tgt.Wait, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scriptGone says whether the script process pid of run id has ended.
func (h *harness) scriptGone(t *testing.T, id string, pid int) bool {
	if h.tgt.Containers != nil {
		return len(h.tgt.Containers(t, id)) == 0
	}
	return testutil.ProcessGone(pid)
}

func (h *harness) mark(id, name string) string { return filepath.Join(h.marks, id+"."+name) }

func (h *harness) readMark(t *testing.T, id, name string) string {
	t.Helper()
	var b []byte
	h.waitFor(t, "mark "+name+" of "+id, func() bool {
		var err error
		b, err = os.ReadFile(h.mark(id, name))
		return err == nil && bytes.HasSuffix(b, []byte("\n"))
	})
	return strings.TrimSpace(string(b))
}

// completes: exit 0, the aml_run helper's metric, an output file and the log
// come back through Collect.
func (h *harness) completes(t *testing.T) {
	drv := h.tgt.Open(t)
	id, _, ex := h.start(t, drv, `echo hello-from-run; cat data.txt
python3 -c 'import aml_run; aml_run.log("accuracy", 0.93, step=1); aml_run.log("accuracy", 0.95, step=2)'
echo model > "$AML_OUTPUTS_DIR/model.txt"`, 1)
	st := h.wait(t, ex)
	if st.Status != run.Completed || st.ExitCode == nil || *st.ExitCode != 0 {
		t.Fatalf("state %+v, want Completed with exit code 0", st)
	}
	col, err := ex.Collect(context.Background())
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if got := run.LastValues(col.Metrics); got["accuracy"] != 0.95 || len(col.Metrics) != 2 {
		t.Errorf("metrics %+v, want accuracy 0.93 then 0.95", col.Metrics)
	}
	if !slices.Equal(col.OutputFiles, []string{"model.txt"}) {
		t.Errorf("output files %v, want [model.txt]", col.OutputFiles)
	}
	if b, err := os.ReadFile(filepath.Join(col.OutputsPath, "model.txt")); err != nil || string(b) != "model\n" {
		t.Errorf("outputs_path %s: model.txt = %q, %v; want it on the engine host", col.OutputsPath, b, err)
	}
	if !strings.Contains(col.LogTail, "hello-from-run") || !strings.Contains(col.LogTail, "conformance") {
		t.Errorf("log tail %q lacks the script's output", col.LogTail)
	}
	if b, err := os.ReadFile(col.LogPath); err != nil || !strings.Contains(string(b), "hello-from-run") {
		t.Errorf("log_path %s: %q, %v", col.LogPath, b, err)
	}
	if h.tgt.Containers != nil {
		if left := h.tgt.Containers(t, id); len(left) > 0 {
			t.Errorf("containers of the completed run left behind: %v", left)
		}
	}
}

// scriptLoggers: what a script logs through azureml.core (Azure ML SDK v1,
// the stand-in when no azureml-core is installed) and through the MLflow file
// store the run is given (written here as MLflow writes it, so the case needs
// no MLflow on the target) comes back: metrics, tags, params, uploaded files
// and artifacts.
func (h *harness) scriptLoggers(t *testing.T) {
	drv := h.tgt.Open(t)
	_, _, ex := h.start(t, drv, `python3 - <<'EOF'
import os, time
from urllib.parse import urlparse
from azureml.core import Run
run = Run.get_context()
print("experiment", run.experiment.name)
run.log("accuracy", 0.9)
run.log_list("loss", [0.5, 0.25])
run.tag("framework", "v1")
open("model.bin", "w").write("m")
run.upload_file("outputs/model.bin", "model.bin")
store = urlparse(os.environ["MLFLOW_TRACKING_URI"]).path
r = os.path.join(store, "0", "abc")
for d in ("metrics", "params", "tags", "artifacts/eval"):
    os.makedirs(os.path.join(r, d), exist_ok=True)
open(os.path.join(store, "0", "meta.yaml"), "w").write("experiment_id: '0'\nname: Default\n")
open(os.path.join(r, "meta.yaml"), "w").write("run_id: abc\nstart_time: %d\nlifecycle_stage: active\n" % (time.time() * 1000))
open(os.path.join(r, "metrics", "f1"), "w").write("%d 0.8 0\n" % (time.time() * 1000))
open(os.path.join(r, "params", "lr"), "w").write("0.01")
open(os.path.join(r, "tags", "team"), "w").write("ml")
open(os.path.join(r, "artifacts", "eval", "report.txt"), "w").write("ok")
EOF`, 1)
	st := h.wait(t, ex)
	col, err := ex.Collect(context.Background())
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if st.Status != run.Completed {
		t.Fatalf("state %+v, want Completed\n%s", st, col.LogTail)
	}
	if got := run.LastValues(col.Metrics); got["accuracy"] != 0.9 || got["loss"] != 0.25 || got["f1"] != 0.8 || len(got) != 3 {
		t.Errorf("metrics %+v", col.Metrics)
	}
	if col.Tags["framework"] != "v1" || col.Tags["team"] != "ml" || len(col.Tags) != 2 || col.Params["lr"] != "0.01" || len(col.Params) != 1 {
		t.Errorf("tags %v, params %v", col.Tags, col.Params)
	}
	if !slices.Equal(col.OutputFiles, []string{"eval/report.txt", "model.bin"}) {
		t.Errorf("output files %v (warnings %v)", col.OutputFiles, col.Warnings)
	}
	if b, err := os.ReadFile(filepath.Join(col.OutputsPath, "eval", "report.txt")); err != nil || string(b) != "ok" {
		t.Errorf("the MLflow artifact on the engine host: %q, %v", b, err)
	}
	if !strings.Contains(col.LogTail, "experiment conformance") {
		t.Errorf("log tail %q lacks the experiment's name", col.LogTail)
	}
}

// fails: a nonzero exit is Failed/nonzero_exit with the script's exit code.
func (h *harness) fails(t *testing.T) {
	drv := h.tgt.Open(t)
	_, _, ex := h.start(t, drv, `echo going-down >&2; exit 3`, 1)
	st := h.wait(t, ex)
	if st.Status != run.Failed || st.FailureReason != run.ReasonNonzeroExit || st.ExitCode == nil || *st.ExitCode != 3 {
		t.Fatalf("state %+v, want Failed/nonzero_exit with exit code 3", st)
	}
	col, err := ex.Collect(context.Background())
	if err != nil || !strings.Contains(col.LogTail, "going-down") {
		t.Errorf("log tail %q (%v) lacks stderr", col.LogTail, err)
	}
}

func (h *harness) waitRunning(t *testing.T, ex drivers.Execution, id string) {
	t.Helper()
	h.readMark(t, id, "running")
	h.waitFor(t, "status Running", func() bool {
		st, err := ex.Status(context.Background())
		return err == nil && st.Status == run.Running
	})
}

// cancel: SIGTERM to the group, Canceled within the grace period.
func (h *harness) cancel(t *testing.T) {
	drv := h.tgt.Open(t)
	id, _, ex := h.start(t, drv, `echo $$ > "$MARKS/$CONF_RUN.running"; sleep 120`, 1)
	h.waitRunning(t, ex, id)
	began := time.Now()
	if err := ex.Cancel(context.Background(), 2*time.Second, run.ReasonCanceled); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	st := h.wait(t, ex)
	if st.Status != run.Canceled || st.FailureReason != run.ReasonCanceled {
		t.Fatalf("state %+v, want Canceled/canceled", st)
	}
	if took := time.Since(began); took > 12*time.Second {
		t.Errorf("cancel took %s with a 2 s grace", took)
	}
	pid, _ := strconv.Atoi(h.readMark(t, id, "running"))
	h.waitFor(t, "the script's process to end", func() bool { return h.scriptGone(t, id, pid) })
}

// recoverInNewDriver: a run started by one driver value is waited for and
// collected by another, from the stored handle alone.
func (h *harness) recoverInNewDriver(t *testing.T) {
	_, hd, _ := h.start(t, h.tgt.Open(t), `sleep 1; echo recovered > "$AML_OUTPUTS_DIR/late.txt"`, 1)
	stored := append(drivers.Handle(nil), hd...)
	ex, err := h.tgt.Open(t).Recover(context.Background(), stored)
	if err != nil {
		t.Fatalf("Recover in a new driver: %v", err)
	}
	if st := h.wait(t, ex); st.Status != run.Completed {
		t.Fatalf("state %+v, want Completed", st)
	}
	col, err := ex.Collect(context.Background())
	if err != nil || !slices.Equal(col.OutputFiles, []string{"late.txt"}) {
		t.Fatalf("collected %+v, %v; want late.txt", col, err)
	}
}

// lostSupervisor: a supervisor killed without recording a result makes the run
// Failed/lost, and its script does not go on unobserved.
func (h *harness) lostSupervisor(t *testing.T) {
	drv := h.tgt.Open(t)
	id, _, ex := h.start(t, drv, `echo $$ > "$MARKS/$CONF_RUN.running"; sleep 120`, 1)
	h.waitRunning(t, ex, id)
	script, err := strconv.Atoi(h.readMark(t, id, "running"))
	if err != nil {
		t.Fatal(err)
	}
	// Only ever our own supervisor: the script's ancestor whose command line
	// says "supervise" and names this run.
	sup := supervisorOf(script, id)
	if sup == 0 && h.tgt.Containers != nil {
		// In a container the script's ancestors are the engine's, not ours.
		sup = findSupervisor(id)
	}
	if sup == 0 {
		t.Fatalf("no supervisor of run %s among the ancestors of its script (pid %d)", id, script)
	}
	if err := syscall.Kill(sup, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st := h.wait(t, ex)
	if st.Status != run.Failed || st.FailureReason != run.ReasonLost {
		t.Fatalf("state %+v, want Failed/lost", st)
	}
	pid, _ := strconv.Atoi(h.readMark(t, id, "running"))
	h.waitFor(t, "the script to end with its supervisor", func() bool { return h.scriptGone(t, id, pid) })
}

// resumableLogs: a reader that stopped at an offset gets exactly the rest.
func (h *harness) resumableLogs(t *testing.T) {
	drv := h.tgt.Open(t)
	ctx := context.Background()
	id, _, ex := h.start(t, drv, `echo line-1
i=0; while [ ! -e "$MARKS/$CONF_RUN.go" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
echo line-2`, 1)
	var first []byte
	var off int64
	h.waitFor(t, "line-1 in the log", func() bool {
		b, next, err := ex.Logs(ctx, 0)
		first, off = b, next
		return err == nil && bytes.Contains(b, []byte("line-1\n"))
	})
	if err := os.WriteFile(h.mark(id, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if st := h.wait(t, ex); st.Status != run.Completed {
		t.Fatalf("state %+v, want Completed", st)
	}
	rest, end, err := ex.Logs(ctx, off)
	if err != nil {
		t.Fatal(err)
	}
	whole, wholeEnd, err := ex.Logs(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(append([]byte{}, first...), rest...), whole) || end != wholeEnd || end != int64(len(whole)) {
		t.Fatalf("resumed log %q + %q (end %d) != whole log %q (end %d)", first, rest, end, whole, wholeEnd)
	}
	if bytes.Contains(rest, []byte("line-1")) || !bytes.Contains(rest, []byte("line-2")) {
		t.Fatalf("the rest from offset %d is %q", off, rest)
	}
	if b, next, err := ex.Logs(ctx, end); err != nil || len(b) != 0 || next != end {
		t.Fatalf("reading at the end: %q, %d, %v", b, next, err)
	}
}

// supervisorOf walks up from pid to the process running `agent supervise`
// for run id; 0 when there is none.
func supervisorOf(pid int, id string) int {
	for n := 0; pid > 1 && n < 32; n++ {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(cmdline, []byte("supervise")) && bytes.Contains(cmdline, []byte(id)) {
			return pid
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0
		}
		i := bytes.LastIndexByte(b, ')')
		f := bytes.Fields(b[i+1:])
		if len(f) < 2 {
			return 0
		}
		pid, _ = strconv.Atoi(string(f[1]))
	}
	return 0
}

// findSupervisor finds the process running `agent supervise` for run id.
func findSupervisor(id string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(cmdline, []byte("\x00supervise\x00")) && bytes.Contains(cmdline, []byte(id)) {
			return pid
		}
	}
	return 0
}

// backgroundProcessesStop: a child that leaves the script's process group
// (setsid) does not outlive the run.
func (h *harness) backgroundProcessesStop(t *testing.T) {
	drv := h.tgt.Open(t)
	id, _, ex := h.start(t, drv, `setsid sh -c 'echo $$ > "$MARKS/$CONF_RUN.bg.tmp"; mv "$MARKS/$CONF_RUN.bg.tmp" "$MARKS/$CONF_RUN.bg"; exec sleep 300' </dev/null >/dev/null 2>&1 &
i=0; while [ ! -e "$MARKS/$CONF_RUN.bg" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
echo started-background`, 1)
	if st := h.wait(t, ex); st.Status != run.Completed {
		t.Fatalf("state %+v, want Completed", st)
	}
	pid, err := strconv.Atoi(h.readMark(t, id, "bg"))
	if err != nil {
		t.Fatal(err)
	}
	if h.tgt.Containers == nil {
		t.Cleanup(func() {
			if !testutil.ProcessGone(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
	}
	h.waitFor(t, fmt.Sprintf("the detached background process %d to be stopped", pid), func() bool { return h.scriptGone(t, id, pid) })
}

// outputsListedAsTheyAre: output_files names exactly the files that are under
// outputs_path on the engine host (odd names encoded reversibly, a link inside
// as a file, a FIFO and a link out left out) and collecting never blocks.
func (h *harness) outputsListedAsTheyAre(t *testing.T) {
	drv := h.tgt.Open(t)
	_, _, ex := h.start(t, drv, `cd "$AML_OUTPUTS_DIR"
echo model > model.txt
printf odd > "$(printf 'bad\377name')"
mkdir -p sub && echo deep > sub/deep.txt
ln -s model.txt alias.txt
ln -s /etc/hostname outside.txt
mkfifo pipe`, 1)
	if st := h.wait(t, ex); st.Status != run.Completed {
		t.Fatalf("state %+v, want Completed", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.tgt.Wait)
	defer cancel()
	col, err := ex.Collect(ctx)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	want := []string{"alias.txt", "bad%FFname", "model.txt", "sub/deep.txt"}
	if !slices.Equal(col.OutputFiles, want) {
		t.Fatalf("output files %q, want %q", col.OutputFiles, want)
	}
	for _, name := range col.OutputFiles {
		raw, err := run.DecodeName(name)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(filepath.Join(col.OutputsPath, filepath.FromSlash(raw))); err != nil || !st.Mode().IsRegular() {
			t.Errorf("listed %q is not a file under %s: %v", name, col.OutputsPath, err)
		}
	}
}

// multiNode: where the kind runs more than one node, every rank runs with its
// rank, the world size and one master address, and each rank's exit code is kept.
func (h *harness) multiNode(t *testing.T) {
	drv := h.tgt.Open(t)
	caps, err := drv.Capabilities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if caps.MaxNodes < 2 {
		// Single-node kinds refuse node_count > 1 before Start (the engine's
		// placement check); there is nothing multi-node to run.
		t.Logf("single-node kind (max %d node): multi-node case not applicable", caps.MaxNodes)
		return
	}
	id, _, ex := h.start(t, drv, `echo "$RANK $WORLD_SIZE $MASTER_ADDR:$MASTER_PORT" > "$MARKS/$CONF_RUN.rank-$RANK"`, 2)
	st := h.wait(t, ex)
	if st.Status != run.Completed || !slices.Equal(st.NodeExitCodes, []int{0, 0}) {
		t.Fatalf("state %+v, want Completed with node exit codes [0 0]", st)
	}
	r0, r1 := strings.Fields(h.readMark(t, id, "rank-0")), strings.Fields(h.readMark(t, id, "rank-1"))
	if len(r0) != 3 || len(r1) != 3 || r0[0] != "0" || r1[0] != "1" || r0[1] != "2" || r1[1] != "2" || r0[2] != r1[2] || strings.HasPrefix(r0[2], ":") {
		t.Fatalf("ranks saw %q and %q; want ranks 0 and 1 of 2 with one master address", r0, r1)
	}
}
