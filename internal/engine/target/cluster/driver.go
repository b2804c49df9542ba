package cluster

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

	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
	"github.com/openaml/terraform-provider-aml/internal/engine/target"
	"github.com/openaml/terraform-provider-aml/internal/engine/target/local"
)

// Driver sends runs to a managed pool: it stages one run directory per rank,
// queues the run and makes sure nodes are coming; node agents do the rest.
type Driver struct{ Pool *Pool }

var _ target.Driver = (*Driver)(nil)

// handle is what the run record keeps.
type handle struct {
	Pool      string `json:"pool"`
	RunDir    string `json:"run_dir"`
	NodeCount int    `json:"node_count"`
}

// Probe describes the engine host, where the nodes run.
func (d *Driver) Probe(ctx context.Context) (target.Facts, error) {
	return (&local.Driver{}).Probe(ctx)
}

// PrepareEnvironment checks this host can provide the environment.
func (d *Driver) PrepareEnvironment(ctx context.Context, e env.Environment) (env.Launch, error) {
	return env.PrepareLocal(ctx, e, os.Getenv("PATH"))
}

// RunDir is the run's directory (rank 0's).
func (d *Driver) RunDir(runID string) string { return filepath.Join(d.Pool.RunsRoot(), runID) }

// Start stages every rank, queues the run and scales the pool up for it.
func (d *Driver) Start(ctx context.Context, spec target.RunSpec) (target.Handle, error) {
	k := spec.NodeCount
	if k < 1 {
		k = 1
	}
	ps, err := d.Pool.LoadSpec(ctx)
	if err != nil {
		return nil, err
	}
	if k > ps.MaxNodes {
		return nil, &FieldError{"run_configuration_id", fmt.Sprintf("the run needs node_count = %d nodes, but pool %q has max_nodes = %d", k, d.Pool.Name, ps.MaxNodes)}
	}
	runDir := d.RunDir(spec.RunID)
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
		req := local.StageRequest{
			RunID: spec.RunID, RunDir: dir, Manifest: spec.Manifest, BlobsRoot: spec.Blobs.Root,
			Argv: spec.Argv, Env: vars, Environment: spec.Environment,
			EnvRoot: d.Pool.EnvRoot, EnvCacheBytes: d.Pool.EnvCacheBytes,
			MaxDurationSec: spec.MaxDuration.Seconds(), GraceSec: spec.Grace.Seconds(),
		}
		if rank > 0 {
			// Rank directories live inside rank 0's control directory, which
			// Stage of rank 0 has created already.
			if err := local.Stage(ctx, req); err != nil {
				return nil, fmt.Errorf("staging rank %d: %w", rank, err)
			}
			continue
		}
		if err := local.Stage(ctx, req); err != nil {
			return nil, err
		}
	}
	if err := d.Pool.Store.Enqueue(ctx, spec.RunID, d.Pool.Name, k); err != nil {
		return nil, err
	}
	for rank := 0; rank < k; rank++ {
		_ = local.ResetForRequeue(RankDir(runDir, rank), "queued on pool "+d.Pool.Name)
	}
	if err := d.Pool.EnsureNodes(ctx); err != nil {
		return nil, err
	}
	return json.Marshal(handle{Pool: d.Pool.Name, RunDir: runDir, NodeCount: k})
}

// Recover re-attaches to a pool run.
func (d *Driver) Recover(ctx context.Context, raw target.Handle) (target.Execution, error) {
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
func (e *execution) Status(ctx context.Context) (target.State, error) {
	// Reap dead nodes and scale for what is queued (a requeued run needs a node
	// even when no other node is left to notice).
	if err := e.p.EnsureNodes(ctx); err != nil {
		return target.State{}, err
	}
	q, err := e.p.Store.QueueEntry(ctx, e.runID)
	if err != nil {
		return target.State{}, err
	}
	if q.State == store.QueueQueued {
		st := target.State{Status: run.Queued}
		if q.Attempts > 0 {
			st.Message = "queued again after a node was lost"
		}
		return st, nil
	}
	states := make([]target.State, e.h.NodeCount)
	for rank := range states {
		if states[rank], err = local.ReadState(RankDir(e.h.RunDir, rank)); err != nil {
			return target.State{}, err
		}
	}
	return combine(states), nil
}

func combine(states []target.State) target.State {
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

func (e *execution) Wait(ctx context.Context) (target.State, error) {
	return target.Poll(ctx, 50*time.Millisecond, 250*time.Millisecond, e.Status, nil)
}

func (e *execution) Logs(ctx context.Context, offset int64) ([]byte, int64, error) {
	ex, err := (&local.Driver{}).Recover(ctx, mustHandle(e.h.RunDir))
	if err != nil {
		return nil, offset, err
	}
	return ex.Logs(ctx, offset)
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
		if !local.SupervisorStarted(dir) {
			errs = append(errs, local.MarkEnded(dir, run.Canceled, reason, "canceled before it started"))
			continue
		}
		ex, err := (&local.Driver{}).Recover(ctx, mustHandle(dir))
		if err == nil {
			err = ex.Cancel(ctx, grace, reason)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Collect reads rank 0's metrics, outputs and log.
func (e *execution) Collect(ctx context.Context) (target.Collected, error) {
	ex, err := (&local.Driver{}).Recover(ctx, mustHandle(e.h.RunDir))
	if err != nil {
		return target.Collected{}, err
	}
	return ex.Collect(ctx)
}

func mustHandle(dir string) target.Handle {
	b, _ := json.Marshal(map[string]string{"run_dir": dir})
	return b
}
