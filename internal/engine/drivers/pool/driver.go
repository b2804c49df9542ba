package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// Driver sends runs to a managed pool: it stages one run directory per rank,
// queues the run and makes sure nodes are coming; node agents do the rest.
type Driver struct{ Pool *Pool }

var _ drivers.Driver = (*Driver)(nil)

// handle is what the run record keeps.
type handle struct {
	Pool      string `json:"pool"`
	RunDir    string `json:"run_dir"`
	NodeCount int    `json:"node_count"`
}

// Probe describes the engine host, where the nodes run.
func (d *Driver) Probe(ctx context.Context) (drivers.Facts, error) {
	return hostrun.ProbeHost(ctx), nil
}

// Capabilities: a run may span up to max_nodes nodes.
func (d *Driver) Capabilities(ctx context.Context) (drivers.Capabilities, error) {
	ps, err := d.Pool.LoadSpec(ctx)
	if err != nil {
		return drivers.Capabilities{}, err
	}
	size, _ := LookupSize(ps.VMSize)
	return drivers.Capabilities{MaxNodes: ps.MaxNodes, MaxNodesReason: fmt.Sprintf("pool %q has max_nodes = %d", d.Pool.Name, ps.MaxNodes), Docker: true, GPUs: size.GPUs, Frameworks: []string{"Python"}, PlanTimeEnvironment: true}, nil
}

// PrepareEnvironment checks this host can provide the environment.
func (d *Driver) PrepareEnvironment(ctx context.Context, e env.Environment) (env.Launch, error) {
	return env.PrepareLocal(ctx, e, os.Getenv("PATH"))
}

// runDir is the run's directory (rank 0's).
func (d *Driver) runDir(runID string) string { return filepath.Join(d.Pool.RunsRoot(), runID) }

// Start stages every rank, queues the run and scales the pool up for it.
func (d *Driver) Start(ctx context.Context, spec drivers.RunSpec) (drivers.Handle, error) {
	k := spec.Nodes()
	ps, err := d.Pool.LoadSpec(ctx)
	if err != nil {
		return nil, err
	}
	if k > ps.MaxNodes {
		return nil, field.Errorf("run_configuration_id", "the run needs node_count = %d nodes, but pool %q has max_nodes = %d", k, d.Pool.Name, ps.MaxNodes)
	}
	runDir := d.runDir(spec.RunID)
	dist := map[string]string{}
	if k > 1 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		ips := strings.TrimSuffix(strings.Repeat("127.0.0.1,", k), ",")
		dist = map[string]string{"WORLD_SIZE": strconv.Itoa(k), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": strconv.Itoa(port), "AML_NODE_IPS": ips}
	}
	for rank := 0; rank < k; rank++ {
		vars := map[string]string{}
		for kk, v := range spec.Env {
			vars[kk] = v
		}
		for kk, v := range dist {
			vars[kk] = v
		}
		if k > 1 {
			vars["RANK"], vars["NODE_RANK"] = strconv.Itoa(rank), strconv.Itoa(rank)
		}
		dir := RankDir(runDir, rank)
		if rank > 0 {
			if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
				return nil, err
			}
		}
		req := hostrun.NewStageRequest(spec, dir)
		req.Env, req.EnvRoot, req.EnvCacheBytes = vars, d.Pool.EnvRoot, d.Pool.EnvCacheBytes
		// Rank directories live inside rank 0's control directory, which
		// Stage of rank 0 has created already.
		if err := hostrun.Stage(ctx, req); err != nil {
			if rank > 0 {
				return nil, fmt.Errorf("staging rank %d: %w", rank, err)
			}
			return nil, err
		}
	}
	if err := d.Pool.Store.Enqueue(ctx, spec.RunID, d.Pool.Name, k); err != nil {
		return nil, err
	}
	for rank := 0; rank < k; rank++ {
		_ = supervise.ResetForRequeue(RankDir(runDir, rank), "queued on pool "+d.Pool.Name)
	}
	d.Pool.Ring()
	if err := d.Pool.EnsureNodes(ctx); err != nil {
		return nil, err
	}
	return json.Marshal(handle{Pool: d.Pool.Name, RunDir: runDir, NodeCount: k})
}

// Recover re-attaches to a pool run.
func (d *Driver) Recover(ctx context.Context, raw drivers.Handle) (drivers.Execution, error) {
	var h handle
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("pool run handle: %w", err)
	}
	return &execution{p: d.Pool, h: h, runID: filepath.Base(h.RunDir)}, nil
}

type execution struct {
	p     *Pool
	h     handle
	runID string
}

// Status combines the queue entry and every rank's state: the run is Queued
// until a gang has it, ends when every rank has ended, and Completes only when
// every rank did.
func (e *execution) Status(ctx context.Context) (drivers.State, error) {
	// Reap dead nodes and scale for what is queued (a requeued run needs a node
	// even when no other node is left to notice).
	if err := e.p.EnsureNodes(ctx); err != nil {
		return drivers.State{}, err
	}
	q, err := e.p.Store.QueueEntry(ctx, e.runID)
	if err != nil {
		return drivers.State{}, err
	}
	if q.State == store.QueueQueued {
		st := drivers.State{Status: run.Queued}
		if q.Attempts > 0 {
			st.Message = "queued again after a node was lost"
		}
		return st, nil
	}
	states := make([]drivers.State, e.h.NodeCount)
	for rank := range states {
		if states[rank], err = supervise.ReadState(RankDir(e.h.RunDir, rank)); err != nil {
			return drivers.State{}, err
		}
	}
	return combine(states), nil
}

func combine(states []drivers.State) drivers.State {
	out := states[0]
	allEnded := true
	codes := make([]int, len(states))
	for i, s := range states {
		if !s.Status.Terminal() {
			allEnded = false
		}
		if s.ExitCode != nil {
			codes[i] = *s.ExitCode
		} else {
			codes[i] = -1
		}
	}
	if len(states) > 1 {
		out.NodeExitCodes = codes
	}
	if !allEnded {
		if out.Status.Terminal() {
			out.Status = run.Running // rank 0 is done, others are not
			out.EndTime = nil
		}
		return out
	}
	// The first rank that did not complete explains the run.
	for i, s := range states {
		if s.Status != run.Completed {
			out.Status, out.FailureReason, out.Signal = s.Status, s.FailureReason, s.Signal
			out.Message = s.Message
			if len(states) > 1 {
				out.Message = fmt.Sprintf("rank %d ended %s (%s): %s", i, s.Status, s.FailureReason, s.Message)
			}
			if out.ExitCode == nil || *out.ExitCode == 0 {
				out.ExitCode = s.ExitCode
			}
			break
		}
	}
	for _, s := range states {
		if s.EndTime != nil && (out.EndTime == nil || s.EndTime.After(*out.EndTime)) {
			out.EndTime = s.EndTime
		}
	}
	return out
}

// Wait returns when every rank has ended. It wakes when a rank's supervisor
// (or the queue, on a requeue) writes a new status into a rank directory
// (inotify, as hostrun's Wait), and checks every waitCheck besides: that check
// also reaps dead nodes and scales for a requeued run. Where the OS has no
// such notification it polls.
func (e *execution) Wait(ctx context.Context) (drivers.State, error) {
	dirs := make([]string, e.h.NodeCount)
	for rank := range dirs {
		dirs[rank] = RankDir(e.h.RunDir, rank)
	}
	w, err := hostrun.WatchRunStatus(dirs...)
	if err != nil {
		return drivers.Poll(ctx, pollFirst, waitCheck, e.Status)
	}
	defer w.Close()
	return drivers.WaitWoken(ctx, w.C(), waitCheck, e.Status)
}

// waitCheck bounds how long Wait goes without looking at the run when no
// status write woke it (a lost node, a supervisor that died silently).
// Without notifications Wait polls, from pollFirst up to waitCheck.
var (
	waitCheck = 250 * time.Millisecond
	pollFirst = 50 * time.Millisecond
)

func (e *execution) Logs(ctx context.Context, offset int64) ([]byte, int64, error) {
	return hostrun.Open(e.h.RunDir).Logs(ctx, offset)
}

// Cancel takes a queued run off the queue, or stops every rank.
func (e *execution) Cancel(ctx context.Context, grace time.Duration, reason string) error {
	q, err := e.p.Store.QueueEntry(ctx, e.runID)
	if err != nil {
		return err
	}
	if q.State == store.QueueQueued {
		if err := e.p.Store.FinishQueued(ctx, e.runID); err != nil {
			return err
		}
	}
	var errs []error
	for rank := 0; rank < e.h.NodeCount; rank++ {
		dir := RankDir(e.h.RunDir, rank)
		if !supervise.SupervisorStarted(dir) {
			errs = append(errs, supervise.MarkEnded(dir, run.Canceled, reason, "canceled before it started"))
			continue
		}
		errs = append(errs, hostrun.Open(dir).Cancel(ctx, grace, reason))
	}
	return errors.Join(errs...)
}

// Collect reads rank 0's metrics, outputs and log.
func (e *execution) Collect(ctx context.Context) (drivers.Collected, error) {
	return hostrun.Open(e.h.RunDir).Collect(ctx)
}
