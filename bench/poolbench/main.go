// Command poolbench pushes short runs through a managed pool (aml_compute) for
// bench/pool.sh and reports how close the pool comes to the ideal makespan.
//
//	poolbench run -provider BIN -python PY -dir DIR [-scenario NAME] [-runs N] [-min N] [-max N] ...
//	poolbench report FILE...
//
// `run` creates a workspace in DIR, a user-managed python run configuration and a
// pool, waits for min_nodes, submits -runs runs of `time.sleep(-sleep)` from one
// engine (-submitters goroutines submit as fast as they can, -waiters goroutines
// wait on them in submission order; -serial submits one, waits, then the next),
// and prints one JSON line of measurements. The pool is always drained
// (DeleteCompute with force), also after an error, a timeout or SIGINT/SIGTERM.
// `report` turns those JSON lines (one or more repetitions per scenario) into
// markdown tables.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: poolbench run ... | poolbench report FILE...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "report":
		err = reportCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "poolbench:", err)
		os.Exit(1)
	}
}

// ---------------------------------------------------------------------------------------------
// run
// ---------------------------------------------------------------------------------------------

// Result is one pass of one scenario (all times in seconds).
type Result struct {
	Scenario   string   `json:"scenario"`
	Runs       int      `json:"runs"`
	Completed  int      `json:"completed"`
	Errors     []string `json:"errors,omitempty"`
	VMSize     string   `json:"vm_size"`
	MinNodes   int      `json:"min_nodes"`
	MaxNodes   int      `json:"max_nodes"`
	Sleep      float64  `json:"sleep"`
	Serial     bool     `json:"serial"`
	Submitters int      `json:"submitters"`
	Waiters    int      `json:"waiters"`

	CreateCompute float64 `json:"create_compute"` // CreateCompute with wait (min_nodes ready)
	Drain         float64 `json:"drain"`          // DeleteCompute(force) at the end (filled in by the drain)

	Makespan   float64 `json:"makespan"`     // first SubmitRun call → last run's EndTime
	Ideal      float64 `json:"ideal"`        // runs × sleep / max_nodes (serial: runs × sleep)
	Wall       float64 `json:"wall"`         // first SubmitRun call → last WaitRun returned
	SubmitAll  float64 `json:"submit_all"`   // first SubmitRun call → last SubmitRun returned
	FirstStart float64 `json:"first_start"`  // first SubmitRun call → first script start
	FullAt     float64 `json:"full_at"`      // first SubmitRun call → max_nodes scripts running at once (-1: never)
	MaxRunning int     `json:"max_running"`  // most scripts running at the same moment
	NodesUsed  int     `json:"nodes_used"`   // distinct nodes that ran something
	NodesAtEnd int     `json:"nodes_at_end"` // pool's current node count before the drain
	Throughput float64 `json:"throughput"`   // runs per second over the makespan

	SubmitCall    Dist `json:"submit_call"`    // SubmitRun call duration
	SubmitStart   Dist `json:"submit_start"`   // SubmitRun called → script started on a node
	QueueWait     Dist `json:"queue_wait"`     // enqueued → claimed by a node
	ClaimStart    Dist `json:"claim_start"`    // claimed → script started (node launches the supervisor, which starts python)
	RunWall       Dist `json:"run_wall"`       // EndTime − StartTime on the node
	Overhead      Dist `json:"overhead"`       // RunWall − sleep
	NodeGap       Dist `json:"node_gap"`       // a node's run ended → its next run's script started
	EndClaim      Dist `json:"end_claim"`      // a node's run ended → the node claimed its next run
	EndObserved   Dist `json:"end_observed"`   // EndTime → WaitRun returned (serial only meaningful)
	SubmitEnqueue Dist `json:"submit_enqueue"` // SubmitRun called → queue row written

	// CPU seconds (from /proc and getrusage) over the pass, up to just before the drain.
	AgentCPU   float64 `json:"agent_cpu"`   // node agents' own loops (utime+stime)
	RunsCPU    float64 `json:"runs_cpu"`    // their reaped children: supervisors and python (cutime+cstime)
	AgentAlive float64 `json:"agent_alive"` // sum of the node agents' lifetimes
	EngineCPU  float64 `json:"engine_cpu"`  // this process (SubmitRun, WaitRun polling) from the first submit
}

// Ideal0 is the ideal throughput in runs per second.
func (r Result) Ideal0() float64 {
	if r.Serial {
		return 1 / r.Sleep
	}
	return float64(r.MaxNodes) / r.Sleep
}

// Dist summarizes a sample.
type Dist struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	P90    float64 `json:"p90"`
	Max    float64 `json:"max"`
	Min    float64 `json:"min"`
}

func dist(xs []float64) Dist {
	if len(xs) == 0 {
		return Dist{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return Dist{N: len(s), Median: median(s), P90: nearestRank(s, 0.90), Max: s[len(s)-1], Min: s[0]}
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func nearestRank(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	return sorted[i]
}

// one is what the bench knows about one run.
type one struct {
	id                   string
	submitAt, submitDone time.Time
	waitDone             time.Time
	enqueued, assigned   time.Time
	start, end           time.Time
	node                 string
	status               run.Status
	err                  error
}

func runCmd(args []string) error {
	res, err := pass(args)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// pass runs one pass and returns its measurements once the pool has been drained.
func pass(args []string) (*Result, error) {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	provider := fs.String("provider", "", "provider binary; node agents run as `<provider> agent node ...` (required)")
	python := fs.String("python", "", "python interpreter for the user-managed run configuration (required)")
	dir := fs.String("dir", "", "scratch directory for this pass: workspace, source, stat cache (required)")
	scenario := fs.String("scenario", "warm", "label of this pass in the report")
	runs := fs.Int("runs", 200, "number of runs")
	minNodes := fs.Int("min", 4, "min_nodes")
	maxNodes := fs.Int("max", 4, "max_nodes")
	vmSize := fs.String("vm", "STANDARD_D1_V2", "vm_size")
	idle := fs.Int("idle", 120, "idle_seconds_before_scaledown")
	sleep := fs.Float64("sleep", 1, "seconds each run sleeps")
	submitters := fs.Int("submitters", 4, "goroutines calling SubmitRun")
	waiters := fs.Int("waiters", 10, "goroutines calling WaitRun")
	serial := fs.Bool("serial", false, "one run at a time: submit, wait, then the next")
	timeout := fs.Duration("timeout", 10*time.Minute, "deadline for the whole pass (the drain gets its own 2 minutes)")
	_ = fs.Parse(args)
	if *provider == "" || *python == "" || *dir == "" {
		return nil, errors.New("run: -provider, -python and -dir are required")
	}
	if *submitters < 1 || *waiters < 1 || *runs < 1 {
		return nil, errors.New("run: -runs, -submitters and -waiters must be at least 1")
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "poolbench[%s]: %s\n", *scenario, fmt.Sprintf(format, a...))
	}

	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(sigCtx, *timeout)
	defer cancel()

	e, err := engine.New(engine.Options{
		AgentCommand: []string{*provider, "agent"},
		WorkDir:      *dir,
		StatCacheDir: filepath.Join(*dir, "statcache"),
		CancelGrace:  2 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	ws, err := e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "poolbench", StoragePath: filepath.Join(*dir, "ws")})
	if err != nil {
		return nil, err
	}
	rc, err := e.PutRunConfig(ctx, ws.ID, engine.RunConfigSpec{
		Name:        "py",
		Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: *python}},
	})
	if err != nil {
		return nil, err
	}
	src := filepath.Join(*dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(src, "train.py"), []byte(fmt.Sprintf("import time\ntime.sleep(%g)\n", *sleep)), 0o644); err != nil {
		return nil, err
	}

	res := &Result{Scenario: *scenario, Runs: *runs, VMSize: *vmSize, MinNodes: *minNodes, MaxNodes: *maxNodes,
		Sleep: *sleep, Serial: *serial, Submitters: *submitters, Waiters: *waiters}
	const poolName = "bench"
	computeID := engine.TargetID(ws.ID, poolName)

	// The drain runs whatever happened: a node agent must never outlive the bench.
	// It is set up before CreateCompute, which may have started nodes when it fails.
	defer func() {
		if sigCtx.Err() != nil {
			logf("signalled: draining the pool (cancels queued and running runs)")
		}
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer dcancel()
		t := time.Now()
		if err := e.DeleteCompute(dctx, computeID, true); err != nil {
			logf("DRAIN FAILED: %v (bench/pool.sh stops leftover agents by PID)", err)
		} else {
			res.Drain = time.Since(t).Seconds()
			logf("pool drained in %.2fs", res.Drain)
		}
	}()

	t := time.Now()
	logf("creating pool %s (min %d, max %d) and waiting for min_nodes", *vmSize, *minNodes, *maxNodes)
	if _, err := e.CreateCompute(ctx, ws.ID, poolName, engine.ComputeSpec{
		VMSize: *vmSize, MinNodes: *minNodes, MaxNodes: *maxNodes, IdleSecondsBeforeScaledown: *idle,
	}, true); err != nil {
		return nil, fmt.Errorf("CreateCompute: %w", err)
	}
	res.CreateCompute = time.Since(t).Seconds()

	recs := make([]one, *runs)
	request := func(i int) engine.RunRequest {
		return engine.RunRequest{
			WorkspaceID: ws.ID, Experiment: "poolbench", SourceDirectory: src, Script: "train.py",
			ComputeTarget: poolName, RunConfigID: rc.ID,
			Triggers: map[string]string{"i": fmt.Sprint(i)}, // every submission distinct
		}
	}
	submit := func(i int) bool {
		r := &recs[i]
		r.submitAt = time.Now()
		got, err := e.SubmitRun(ctx, request(i))
		r.submitDone = time.Now()
		if err != nil {
			r.err = fmt.Errorf("submit %d: %w", i, err)
			return false
		}
		r.id = got.ID
		return true
	}
	wait := func(i int) {
		r := &recs[i]
		got, err := e.WaitRun(ctx, r.id)
		r.waitDone = time.Now()
		if got != nil {
			r.status = got.Status
			if got.StartTime != nil {
				r.start = *got.StartTime
			}
			if got.EndTime != nil {
				r.end = *got.EndTime
			}
			r.node = nodeOf(filepath.Dir(got.OutputsPath))
		}
		if err != nil {
			r.err = fmt.Errorf("run %d: %w", i, err)
		}
	}

	ru0 := selfCPU()
	logf("submitting %d runs (%s)", *runs, map[bool]string{true: "one at a time", false: fmt.Sprintf("%d submitters, %d waiters", *submitters, *waiters)}[*serial])
	t0 := time.Now()
	if *serial {
		for i := 0; i < *runs && ctx.Err() == nil; i++ {
			if submit(i) {
				wait(i)
			}
		}
	} else {
		jobs := make(chan int)
		submitted := make(chan int, *runs)
		var sw, ww sync.WaitGroup
		for k := 0; k < *submitters; k++ {
			sw.Add(1)
			go func() {
				defer sw.Done()
				for i := range jobs {
					if submit(i) {
						submitted <- i
					}
				}
			}()
		}
		for k := 0; k < *waiters; k++ {
			ww.Add(1)
			go func() {
				defer ww.Done()
				for i := range submitted {
					wait(i)
				}
			}()
		}
	feed:
		for i := 0; i < *runs; i++ {
			select {
			case jobs <- i:
			case <-ctx.Done():
				break feed
			}
		}
		close(jobs)
		sw.Wait()
		close(submitted)
		ww.Wait()
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("pass interrupted or over its deadline (%v): %w", *timeout, ctx.Err())
	}

	// Queue timestamps (enqueued, claimed) are in the store until the drain.
	s, err := store.Open(ctx, ws.Dir)
	if err != nil {
		return nil, err
	}
	res.EngineCPU = selfCPU() - ru0
	if nodes, err := s.Nodes(ctx, poolName); err == nil {
		for _, n := range nodes {
			own, kids, ok := procCPU(n.PID)
			if ok {
				res.AgentCPU += own
				res.RunsCPU += kids
				res.AgentAlive += time.Since(n.StartedAt).Seconds()
			}
		}
	}
	for i := range recs {
		if recs[i].id == "" {
			continue
		}
		_, rid, _ := engine.ParseRunID(recs[i].id)
		if q, err := s.QueueEntry(ctx, rid); err == nil {
			recs[i].enqueued, recs[i].assigned = q.EnqueuedAt, q.AssignedAt
		}
	}
	s.Close()
	if c, err := e.ReadCompute(ctx, computeID); err == nil {
		res.NodesAtEnd = c.Counts.Current
	}
	summarize(res, recs, t0)
	logf("done: %d/%d completed, makespan %.2fs (ideal %.0fs); draining", res.Completed, res.Runs, res.Makespan, res.Ideal)
	return res, nil
}

// nodeOf reads which node ran a run (the node file a pool node writes into the run directory).
func nodeOf(runDir string) string {
	var a struct {
		NodeID string `json:"node_id"`
	}
	b, err := os.ReadFile(filepath.Join(runDir, ".aml", "node.json"))
	if err != nil || json.Unmarshal(b, &a) != nil {
		return ""
	}
	return a.NodeID
}

func sec(d time.Duration) float64 { return d.Seconds() }

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clockTicks = 100

// procCPU reads a process's own CPU seconds and those of its reaped children.
func procCPU(pid int) (own, children float64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, 0, false
	}
	var v [4]float64
	for k := range v {
		if _, err := fmt.Sscan(f[11+k], &v[k]); err != nil {
			return 0, 0, false
		}
	}
	return (v[0] + v[1]) / clockTicks, (v[2] + v[3]) / clockTicks, true
}

// selfCPU is this process's CPU seconds so far.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func summarize(res *Result, recs []one, t0 time.Time) {
	var ok []one
	for _, r := range recs {
		if r.err != nil && len(res.Errors) < 5 {
			res.Errors = append(res.Errors, firstLine(r.err.Error()))
		}
		if r.status == run.Completed && !r.start.IsZero() && !r.end.IsZero() {
			ok = append(ok, r)
		}
	}
	res.Completed = len(ok)
	if res.Serial {
		res.Ideal = float64(res.Runs) * res.Sleep
	} else {
		res.Ideal = float64(res.Runs) * res.Sleep / float64(res.MaxNodes)
	}
	if len(ok) == 0 {
		return
	}
	var lastEnd, lastWait, lastSubmit, firstStart time.Time
	var submitCall, s2s, qwait, cstart, wall, over, observed, s2e []float64
	nodes := map[string][]one{}
	for _, r := range ok {
		if r.end.After(lastEnd) {
			lastEnd = r.end
		}
		if r.waitDone.After(lastWait) {
			lastWait = r.waitDone
		}
		if r.submitDone.After(lastSubmit) {
			lastSubmit = r.submitDone
		}
		if firstStart.IsZero() || r.start.Before(firstStart) {
			firstStart = r.start
		}
		submitCall = append(submitCall, sec(r.submitDone.Sub(r.submitAt)))
		s2s = append(s2s, sec(r.start.Sub(r.submitAt)))
		w := sec(r.end.Sub(r.start))
		wall = append(wall, w)
		over = append(over, w-res.Sleep)
		observed = append(observed, sec(r.waitDone.Sub(r.end)))
		if !r.enqueued.IsZero() {
			s2e = append(s2e, sec(r.enqueued.Sub(r.submitAt)))
		}
		if !r.enqueued.IsZero() && !r.assigned.IsZero() {
			qwait = append(qwait, sec(r.assigned.Sub(r.enqueued)))
			cstart = append(cstart, sec(r.start.Sub(r.assigned)))
		}
		if r.node != "" {
			nodes[r.node] = append(nodes[r.node], r)
		}
	}
	res.Makespan = sec(lastEnd.Sub(t0))
	res.Wall = sec(lastWait.Sub(t0))
	res.SubmitAll = sec(lastSubmit.Sub(t0))
	res.FirstStart = sec(firstStart.Sub(t0))
	if res.Makespan > 0 {
		res.Throughput = float64(len(ok)) / res.Makespan
	}
	res.SubmitCall, res.SubmitStart, res.QueueWait, res.ClaimStart = dist(submitCall), dist(s2s), dist(qwait), dist(cstart)
	res.RunWall, res.Overhead, res.EndObserved, res.SubmitEnqueue = dist(wall), dist(over), dist(observed), dist(s2e)

	var gaps, endClaim []float64
	for _, rs := range nodes {
		sort.Slice(rs, func(i, j int) bool { return rs[i].start.Before(rs[j].start) })
		for k := 1; k < len(rs); k++ {
			gaps = append(gaps, sec(rs[k].start.Sub(rs[k-1].end)))
			if !rs[k].assigned.IsZero() {
				endClaim = append(endClaim, sec(rs[k].assigned.Sub(rs[k-1].end)))
			}
		}
	}
	res.NodesUsed = len(nodes)
	res.NodeGap, res.EndClaim = dist(gaps), dist(endClaim)

	// Sweep the [start, end) intervals: the most scripts running at once, and when
	// the pool first ran max_nodes of them.
	type ev struct {
		t     time.Time
		delta int
	}
	evs := make([]ev, 0, 2*len(ok))
	for _, r := range ok {
		evs = append(evs, ev{r.start, +1}, ev{r.end, -1})
	}
	sort.Slice(evs, func(i, j int) bool {
		if evs[i].t.Equal(evs[j].t) {
			return evs[i].delta < evs[j].delta // an end before a start at the same instant
		}
		return evs[i].t.Before(evs[j].t)
	})
	cur := 0
	res.FullAt = -1
	for _, x := range evs {
		cur += x.delta
		if cur > res.MaxRunning {
			res.MaxRunning = cur
		}
		if cur >= res.MaxNodes && res.FullAt < 0 {
			res.FullAt = sec(x.t.Sub(t0))
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// ---------------------------------------------------------------------------------------------
// report
// ---------------------------------------------------------------------------------------------

func reportCmd(files []string) error {
	var order []string
	by := map[string][]Result{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			var r Result
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				fh.Close()
				return fmt.Errorf("%s: %w", f, err)
			}
			if _, seen := by[r.Scenario]; !seen {
				order = append(order, r.Scenario)
			}
			by[r.Scenario] = append(by[r.Scenario], r)
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return err
		}
	}
	if len(order) == 0 {
		return errors.New("report: no results")
	}
	// cell: one number, or "median (min–max)" across repetitions that differ.
	cell := func(rs []Result, f func(Result) float64, format string) string {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		d := dist(xs)
		if len(xs) == 1 || fmt.Sprintf(format, d.Min) == fmt.Sprintf(format, d.Max) {
			return fmt.Sprintf(format, d.Median)
		}
		return fmt.Sprintf(format+" ("+format+"–"+format+")", d.Median, d.Min, d.Max)
	}
	label := func(r Result) string {
		mode := "burst"
		if r.Serial {
			mode = "one at a time"
		}
		warmth := "warm"
		if r.MinNodes < r.MaxNodes {
			warmth = "cold"
		}
		return fmt.Sprintf("%s (min %d, max %d), %d runs, %s", warmth, r.MinNodes, r.MaxNodes, r.Runs, mode)
	}
	reps := len(by[order[0]])

	fmt.Println("| pool, runs | makespan (s) | ideal (s) | makespan / ideal | submit→start median (s) | p90 (s) | max (s) | per-run overhead, median (s) | most running at once |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, sc := range order {
		rs := by[sc]
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label(rs[0]),
			cell(rs, func(r Result) float64 { return r.Makespan }, "%.1f"),
			cell(rs, func(r Result) float64 { return r.Ideal }, "%.0f"),
			cell(rs, func(r Result) float64 { return r.Makespan / r.Ideal }, "%.2f×"),
			cell(rs, func(r Result) float64 { return r.SubmitStart.Median }, "%.2f"),
			cell(rs, func(r Result) float64 { return r.SubmitStart.P90 }, "%.2f"),
			cell(rs, func(r Result) float64 { return r.SubmitStart.Max }, "%.2f"),
			cell(rs, func(r Result) float64 { return r.Overhead.Median }, "%.3f"),
			cell(rs, func(r Result) float64 { return float64(r.MaxRunning) }, "%.0f"))
	}
	fmt.Println()
	fmt.Println("Where the time goes (medians over the runs of a pass; with repetitions, the median of those):")
	fmt.Println()
	fmt.Println("| pool, runs | SubmitRun call (s) | all submitted after (s) | submit → queued (s) | queued → claimed (s) | claimed → script start (s) | node idle between runs (s) | run end → next claim (s) | end → WaitRun returns (s) | first script start after (s) | max_nodes running after (s) |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, sc := range order {
		rs := by[sc]
		full := cell(rs, func(r Result) float64 { return r.FullAt }, "%.2f")
		if rs[0].FullAt < 0 {
			full = "—"
		}
		gap := cell(rs, func(r Result) float64 { return r.NodeGap.Median }, "%.3f")
		endClaim := cell(rs, func(r Result) float64 { return r.EndClaim.Median }, "%.3f")
		if rs[0].Serial {
			// A node's next run waits for the engine to see the end and submit again.
			gap, endClaim = "—", "—"
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label(rs[0]),
			cell(rs, func(r Result) float64 { return r.SubmitCall.Median }, "%.3f"),
			cell(rs, func(r Result) float64 { return r.SubmitAll }, "%.2f"),
			cell(rs, func(r Result) float64 { return r.SubmitEnqueue.Median }, "%.3f"),
			cell(rs, func(r Result) float64 { return r.QueueWait.Median }, "%.3f"),
			cell(rs, func(r Result) float64 { return r.ClaimStart.Median }, "%.3f"),
			gap, endClaim,
			cell(rs, func(r Result) float64 { return r.EndObserved.Median }, "%.3f"),
			cell(rs, func(r Result) float64 { return r.FirstStart }, "%.2f"),
			full)
	}
	fmt.Println()
	fmt.Printf("- %d repetition(s) per row. Each pass: a fresh workspace in a temp dir, a user-managed python run configuration (the real interpreter, no shim), `train.py` = `import time; time.sleep(1)`, one engine in one process, vm_size %s.\n", reps, by[order[0]][0].VMSize)
	for _, sc := range order {
		rs := by[sc]
		r0 := rs[0]
		var notes []string
		for _, r := range rs {
			if r.Completed != r.Runs {
				notes = append(notes, fmt.Sprintf("**only %d of %d runs completed**: %s", r.Completed, r.Runs, strings.Join(r.Errors, "; ")))
			}
		}
		how := fmt.Sprintf("%d goroutines submit as fast as they can while %d goroutines wait on the runs in submission order", r0.Submitters, r0.Waiters)
		if r0.Serial {
			how = "one run is submitted, waited on, then the next (no queue: this is the pool's own dispatch latency)"
		}
		cpu := fmt.Sprintf(" CPU until the drain: node agents' own loops %s s over %s node-seconds (%s of a core per node), supervisors + python %s s, the engine process (submitting and polling) %s s.",
			cell(rs, func(r Result) float64 { return r.AgentCPU }, "%.1f"),
			cell(rs, func(r Result) float64 { return r.AgentAlive }, "%.0f"),
			cell(rs, func(r Result) float64 {
				if r.AgentAlive == 0 {
					return 0
				}
				return 100 * r.AgentCPU / r.AgentAlive
			}, "%.1f%%"),
			cell(rs, func(r Result) float64 { return r.RunsCPU }, "%.1f"),
			cell(rs, func(r Result) float64 { return r.EngineCPU }, "%.1f"))
		fmt.Printf("- %s: %s; pool created with `wait` in %s s (min_nodes ready); throughput %s runs/s (ideal %.1f); nodes that ran something: %s; spread of submit→start p90 %s s; per-run overhead p90 %s s; draining the pool took %s s.%s%s\n",
			label(r0), how,
			cell(rs, func(r Result) float64 { return r.CreateCompute }, "%.2f"),
			cell(rs, func(r Result) float64 { return r.Throughput }, "%.2f"),
			r0.Ideal0(),
			cell(rs, func(r Result) float64 { return float64(r.NodesUsed) }, "%.0f"),
			cell(rs, func(r Result) float64 { return r.SubmitStart.P90 }, "%.2f"),
			cell(rs, func(r Result) float64 { return r.Overhead.P90 }, "%.3f"),
			cell(rs, func(r Result) float64 { return r.Drain }, "%.2f"),
			cpu,
			func() string {
				if len(notes) == 0 {
					return " All runs completed."
				}
				return " " + strings.Join(notes, " ")
			}())
	}
	return nil
}
