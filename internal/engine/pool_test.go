package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// newPool creates a managed pool in te's workspace and drains it at cleanup, so
// no node agent outlives the test.
func newPool(t *testing.T, te *testEnv, name string, spec engine.ComputeSpec) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := te.e.CreateCompute(ctx, te.ws, name, spec, true)
	if err != nil {
		t.Fatalf("CreateCompute: %v", err)
	}
	t.Cleanup(func() {
		if err := te.e.DeleteCompute(context.Background(), c.ID, true); err != nil {
			t.Errorf("draining pool %s: %v", name, err)
		}
	})
	return c.ID
}

// spanScript records when it ran, so tests can check how many ran at once.
const spanScript = `import json, os, sys, time
import aml_run
start = time.time()
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
aml_run.log("c", float(os.environ.get("C", "0")))
with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "span.json"), "w") as f:
    json.dump({"start": start, "end": time.time(), "node": os.environ.get("AML_NODE_ID", ""),
               "rank": os.environ.get("RANK", ""), "world": os.environ.get("WORLD_SIZE", ""),
               "master": os.environ.get("MASTER_ADDR", "") + ":" + os.environ.get("MASTER_PORT", ""),
               "omp": os.environ.get("OMP_NUM_THREADS", "")}, f)
`

type span struct {
	Start, End             float64
	Node, Rank, World, OMP string
	Master                 string
}

func readSpan(t *testing.T, dir string) span {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "outputs", "span.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s span
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Four runs on a max_nodes = 2 pool: two at a time, all complete.
func TestPoolRunsTwoAtATime(t *testing.T) {
	te := setup(t, nil)
	newPool(t, te, "cpu", engine.ComputeSpec{VMSize: "STANDARD_D1_V2", MinNodes: 0, MaxNodes: 2, IdleSecondsBeforeScaledown: 60})
	src := writeSource(t, map[string]string{"train.py": spanScript})
	runs, errs := runConcurrently(te.e, 4, time.Minute, func(i int) engine.RunRequest {
		req := te.request(src, "train.py", "1.0")
		req.ComputeTarget = "cpu"
		req.EnvironmentVariables = map[string]string{"C": strconv.Itoa(i)}
		return req
	})
	var spans []span
	for i, r := range runs {
		if errs[i] != nil || r.Status != run.Completed || r.Metrics["c"] != float64(i) {
			t.Fatalf("run %d: %+v, %v", i, r, errs[i])
		}
		spans = append(spans, readSpan(t, filepath.Dir(r.OutputsPath)))
	}
	// At no moment did more than two run, and at some moment two did.
	maxAtOnce := 0
	for _, a := range spans {
		n := 0
		for _, b := range spans {
			if b.Start <= a.Start && a.Start < b.End {
				n++
			}
		}
		if n > maxAtOnce {
			maxAtOnce = n
		}
	}
	if maxAtOnce != 2 {
		t.Fatalf("at most %d runs ran at once on a max_nodes = 2 pool, want 2: %+v", maxAtOnce, spans)
	}
	for _, s := range spans {
		if s.Node == "" || s.OMP != "1" {
			t.Fatalf("a run did not see its node: %+v", s)
		}
	}
}

// Nodes scale down to min_nodes after the idle time, with no engine alive.
func TestPoolScalesDownWithoutEngine(t *testing.T) {
	te := setup(t, nil)
	id := newPool(t, te, "cpu", engine.ComputeSpec{VMSize: "STANDARD_D1_V2", MinNodes: 1, MaxNodes: 2, IdleSecondsBeforeScaledown: 1})
	src := writeSource(t, map[string]string{"train.py": spanScript})
	ctx := context.Background()
	var ids []string
	for i := 0; i < 2; i++ {
		req := te.request(src, "train.py", "0.5")
		req.ComputeTarget = "cpu"
		req.Triggers = map[string]string{"i": strconv.Itoa(i)}
		r, err := te.e.SubmitRun(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	c, err := te.e.ReadCompute(ctx, id)
	if err != nil || c.Counts.Current != 2 {
		t.Fatalf("pool should have grown to 2 nodes: %+v, %v", c, err)
	}
	te.e.Close() // nothing of the engine is left: the nodes work alone
	time.Sleep(4 * time.Second)
	fresh := newEngine(t, te.workDir)
	for _, rid := range ids {
		if r, err := fresh.ReadRun(ctx, rid); err != nil || r.Status != run.Completed {
			t.Fatalf("run %s: %+v, %v", rid, r, err)
		}
	}
	c, err = fresh.ReadCompute(ctx, id)
	if err != nil || c.Counts.Current != 1 || c.Counts.Idle != 1 {
		t.Fatalf("after the idle time the pool should be at min_nodes = 1: %+v, %v", c.Counts, err)
	}
	te.e = fresh
}

// A node agent killed with SIGKILL mid-run: its run is requeued and completes.
func TestPoolRequeuesKilledNodesRun(t *testing.T) {
	te := setup(t, nil)
	newPool(t, te, "cpu", engine.ComputeSpec{VMSize: "STANDARD_D1_V2", MinNodes: 0, MaxNodes: 2, IdleSecondsBeforeScaledown: 60})
	src := writeSource(t, map[string]string{"train.py": spanScript})
	ctx := context.Background()
	req := te.request(src, "train.py", "2")
	req.ComputeTarget = "cpu"
	r, err := te.e.SubmitRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// Wait until it runs, then kill its node agent.
	var nodePID int
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && nodePID == 0 {
		cur, _ := te.e.ReadRun(ctx, r.ID)
		if cur != nil && cur.Status == run.Running {
			nodePID = runningNodePID(t, te.wsDir)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if nodePID == 0 {
		t.Fatal("the run never started on a node")
	}
	if err := syscall.Kill(nodePID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	done, err := te.e.WaitRun(wctx, r.ID)
	if err != nil || done.Status != run.Completed {
		logs, _ := filepath.Glob(filepath.Join(te.wsDir, "pools", "cpu", "*.log"))
		for _, f := range logs {
			b, _ := os.ReadFile(f)
			t.Logf("%s:\n%s", filepath.Base(f), b)
		}
		t.Fatalf("requeued run: %+v, %v", done, err)
	}
	log, _ := os.ReadFile(done.LogPath)
	if !contains(string(log), "queued again") {
		t.Fatalf("the run's log does not show the requeue:\n%s", log)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0))
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// runningNodePID finds the agent of the pool's running node via its log.
func runningNodePID(t *testing.T, ws string) int {
	t.Helper()
	ents, _ := filepath.Glob(filepath.Join(ws, "pools", "cpu", "*.log"))
	for _, f := range ents {
		b, _ := os.ReadFile(f)
		s := string(b)
		if indexOf(s, "claimed run") < 0 {
			continue
		}
		var pid int
		if i := indexOf(s, "started (pid "); i >= 0 {
			_, _ = fmtSscan(s[i+len("started (pid "):], &pid)
			return pid
		}
	}
	return 0
}

// A 2-node run: ranks 0 and 1, one MASTER_ADDR:PORT, WORLD_SIZE 2.
func TestPoolMultiNodeRun(t *testing.T) {
	te := setup(t, func(s *engine.RunConfigSpec) { s.NodeCount = 2 })
	newPool(t, te, "cpu", engine.ComputeSpec{VMSize: "STANDARD_D1_V2", MinNodes: 0, MaxNodes: 2, IdleSecondsBeforeScaledown: 60})
	src := writeSource(t, map[string]string{"train.py": spanScript})
	ctx := context.Background()
	req := te.request(src, "train.py", "0.3")
	req.ComputeTarget = "cpu"
	r, err := te.e.SubmitRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	done, err := te.e.WaitRun(ctx, r.ID)
	if err != nil || done.Status != run.Completed {
		t.Fatalf("2-node run: %+v, %v", done, err)
	}
	runDir := filepath.Dir(done.OutputsPath)
	r0 := readSpan(t, runDir)
	r1 := readSpan(t, filepath.Join(runDir, ".aml", "rank-1"))
	if r0.Rank != "0" || r1.Rank != "1" || r0.World != "2" || r1.World != "2" || r0.Master != r1.Master || r0.Node == r1.Node {
		t.Fatalf("ranks: %+v / %+v", r0, r1)
	}
	// More nodes than the pool has is refused before anything runs.
	big := setup(t, func(s *engine.RunConfigSpec) { s.NodeCount = 3 })
	newPool(t, big, "cpu", engine.ComputeSpec{VMSize: "STANDARD_D1_V2", MaxNodes: 2})
	req = big.request(src, "train.py")
	req.ComputeTarget = "cpu"
	if _, err := big.e.SubmitRun(ctx, req); err == nil || indexOf(err.Error(), "max_nodes = 2") < 0 {
		t.Fatalf("node_count 3 on a 2-node pool: %v", err)
	}
}

func fmtSscan(s string, pid *int) (int, error) {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	v, err := strconv.Atoi(s[:n])
	*pid = v
	return n, err
}

// Two engines (as two terraform applies would) submit to one pool at once:
// every run completes exactly once and the pool never runs more than max_nodes.
func TestPoolTwoEnginesSubmitAtOnce(t *testing.T) {
	te := setup(t, nil)
	newPool(t, te, "cpu", engine.ComputeSpec{VMSize: "STANDARD_D1_V2", MaxNodes: 2, IdleSecondsBeforeScaledown: 60})
	other := newEngine(t, te.workDir)
	src := writeSource(t, map[string]string{"train.py": spanScript})
	ctx := context.Background()
	var wg sync.WaitGroup
	type result struct {
		r   *engine.Run
		err error
	}
	results := make(chan result, 6)
	for i := 0; i < 6; i++ {
		e := te.e
		if i%2 == 1 {
			e = other
		}
		wg.Add(1)
		go func(i int, e *engine.Engine) {
			defer wg.Done()
			req := te.request(src, "train.py", "0.5")
			req.ComputeTarget = "cpu"
			req.EnvironmentVariables = map[string]string{"C": strconv.Itoa(i)}
			r, err := e.SubmitRun(ctx, req)
			if err == nil {
				r, err = e.WaitRun(ctx, r.ID)
			}
			results <- result{r, err}
		}(i, e)
	}
	wg.Wait()
	close(results)
	var spans []span
	seen := map[float64]bool{}
	for res := range results {
		if res.err != nil || res.r.Status != run.Completed {
			t.Fatalf("run: %+v, %v", res.r, res.err)
		}
		seen[res.r.Metrics["c"]] = true
		spans = append(spans, readSpan(t, filepath.Dir(res.r.OutputsPath)))
	}
	if len(seen) != 6 {
		t.Fatalf("runs completed with metrics %v, want 6 distinct", seen)
	}
	for _, a := range spans {
		n := 0
		for _, b := range spans {
			if b.Start <= a.Start && a.Start < b.End {
				n++
			}
		}
		if n > 2 {
			t.Fatalf("%d runs ran at once on a max_nodes = 2 pool: %+v", n, spans)
		}
	}
	ws, err := te.e.ReadWorkspace(ctx, te.ws)
	if err != nil || ws.RunCount != 6 {
		t.Fatalf("workspace holds %d runs, want 6 (%v)", ws.RunCount, err)
	}
}

// Destroying a workspace stops its pools' node agents first.
func TestDeleteWorkspaceStopsPools(t *testing.T) {
	te := setup(t, nil)
	ctx := context.Background()
	if _, err := te.e.CreateCompute(ctx, te.ws, "cpu", engine.ComputeSpec{VMSize: "STANDARD_D1_V2", MinNodes: 1, MaxNodes: 1, IdleSecondsBeforeScaledown: 60}, true); err != nil {
		t.Fatal(err)
	}
	pid := 0
	logs, _ := filepath.Glob(filepath.Join(te.wsDir, "pools", "cpu", "*.log"))
	for _, f := range logs {
		b, _ := os.ReadFile(f)
		if i := indexOf(string(b), "started (pid "); i >= 0 {
			_, _ = fmtSscan(string(b)[i+len("started (pid "):], &pid)
		}
	}
	if pid == 0 {
		t.Fatal("no node agent started")
	}
	if err := te.e.DeleteWorkspace(ctx, te.ws, true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || indexOf(string(b), ") Z") >= 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node agent %d still running after the workspace was deleted", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
