package pool

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// tick is how often a node looks for work; maintenance (reaping dead nodes,
// keeping min_nodes) runs every maintainEvery.
var (
	tick          = 100 * time.Millisecond
	maintainEvery = 2 * time.Second
	cancelGrace   = 10 * time.Second
)

// RunNode is the body of `terraform-provider-aml agent node <workspace> <pool>
// <node-id>`: one node of a managed pool. It heartbeats its lease, claims queued
// runs (gang-scheduling multi-node ones), runs its rank under a supervisor that
// dies with it, stops siblings when a rank fails, and retires itself after
// idle_seconds_before_scaledown while the pool keeps more than min_nodes.
func RunNode(wsDir, poolName, nodeID string) int {
	logger := log.New(os.Stderr, "aml-node "+nodeID+" ", log.LstdFlags|log.LUTC|log.Lmicroseconds)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s, err := store.Open(context.Background(), wsDir)
	if err != nil {
		logger.Printf("opening workspace: %v", err)
		return 1
	}
	defer s.Close()
	exe, err := os.Executable()
	if err != nil {
		logger.Print(err)
		return 1
	}
	n := &node{
		id:  nodeID,
		log: logger,
		p:   &Pool{Store: s, Name: poolName, AgentCommand: []string{exe, "agent"}, EnvRoot: filepath.Join(wsDir, drivers.EnvsDir), Host: ThisHost()},
	}
	bg := context.Background()
	if err := s.NodeStarted(bg, nodeID, os.Getpid(), supervise.SelfStartTicks()); err != nil {
		logger.Printf("registering: %v", err)
		return 1
	}
	logger.Printf("started (pid %d)", os.Getpid())
	return n.loop(ctx)
}

type node struct {
	id  string
	p   *Pool
	log *log.Logger
	cur *rankProc
}

type rankProc struct {
	runID  string
	rank   int
	dir    string
	cmd    *exec.Cmd
	done   chan error
	exited bool
}

// exitCh is the running rank's exit channel (nil, never ready, when idle), so
// the loop wakes the moment a rank ends instead of at the next tick.
func (n *node) exitCh() <-chan error {
	if n.cur == nil || n.cur.exited {
		return nil
	}
	return n.cur.done
}

func (n *node) loop(ctx context.Context) int {
	bg := context.Background()
	lastMaintain, lastBeat := time.Time{}, time.Time{}
	t := time.NewTicker(tick)
	defer t.Stop()
	// The queue bell wakes an idle node the moment a run is queued; without
	// it (no inotify) the node finds the run at its next tick.
	var bell <-chan struct{}
	_ = os.MkdirAll(n.p.logDir(), 0o755)
	if w, err := hostrun.WatchFiles(n.p.bellPath()); err == nil {
		defer w.Close()
		bell = w.C()
	} else {
		n.log.Printf("no queue bell (%v): looking for runs every %s", err, tick)
	}
	// The first pass runs at once: a node started for a queued run claims it
	// without waiting a tick.
	now := make(chan struct{}, 1)
	now <- struct{}{}
	for {
		select {
		case <-now:
		case <-ctx.Done():
			n.log.Printf("signalled: stopping")
			n.stopCurrent(run.ReasonCanceled)
			_ = n.p.Store.RemoveNode(bg, n.id)
			return 0
		case <-t.C:
		case <-n.exitCh():
			n.cur.exited = true
		case <-bell:
			if n.cur != nil && !n.cur.exited {
				continue // busy: the bell is for idle nodes
			}
		}
		// The lease is written every HeartbeatEvery; in between the row is only read.
		var row store.NodeRow
		var err error
		if time.Since(lastBeat) >= HeartbeatEvery {
			row, err = n.p.Store.Heartbeat(bg, n.id)
			lastBeat = time.Now()
		} else {
			row, err = n.p.Store.Node(bg, n.id)
		}
		if store.IsNotFoundErr(err) {
			n.log.Printf("removed from the pool: exiting")
			n.stopCurrent(run.ReasonLost)
			return 0
		}
		if err != nil {
			n.log.Printf("heartbeat: %v", err)
			continue
		}
		spec, err := n.p.LoadSpec(bg)
		if store.IsNotFoundErr(err) {
			n.log.Printf("pool deleted: exiting")
			n.stopCurrent(run.ReasonCanceled)
			_ = n.p.Store.RemoveNode(bg, n.id)
			return 0
		}
		if err != nil {
			n.log.Printf("reading pool: %v", err)
			continue
		}
		if row.State == store.NodeLeaving {
			n.log.Printf("draining: exiting")
			n.stopCurrent(run.ReasonCanceled)
			_ = n.p.Store.RemoveNode(bg, n.id)
			return 0
		}
		if time.Since(lastMaintain) > maintainEvery {
			lastMaintain = time.Now()
			// A workspace deleted under us (its database unlinked): stop.
			if _, err := os.Stat(filepath.Join(n.p.Store.Dir, store.DBFile)); err != nil {
				n.log.Printf("workspace is gone: exiting")
				n.stopCurrent(run.ReasonCanceled)
				return 0
			}
			if err := n.p.EnsureNodes(bg); err != nil {
				n.log.Printf("maintenance: %v", err)
			}
		}
		if n.cur != nil {
			n.watch(bg, row)
			if n.cur != nil {
				continue
			}
			// The rank just ended: look for the next run in this same pass.
			if row, err = n.p.Store.Node(bg, n.id); err != nil {
				continue
			}
		}
		switch row.State {
		case store.NodeRunning:
			n.launch(bg, row, spec)
		case store.NodeIdle:
			// A read first: an idle pool should not take the write lock every tick.
			queued, _, err := n.p.Store.QueueDemand(bg, n.p.Name)
			if err != nil {
				continue
			}
			runID := ""
			if queued > 0 {
				runID, err = n.p.Store.Claim(bg, n.p.Name, n.id, LeaseTimeout/2)
			}
			if err != nil {
				n.log.Printf("claim: %v", err)
				continue
			}
			if runID != "" {
				n.log.Printf("claimed run %s", runID)
				if row, err = n.p.Store.Node(bg, n.id); err == nil {
					n.launch(bg, row, spec)
				}
				continue
			}
			idle := time.Duration(spec.IdleSecondsBeforeScaledown) * time.Second
			if time.Since(row.IdleSince) >= idle {
				if ok, err := n.p.Store.RetireNode(bg, n.id, spec.MinNodes); err == nil && ok {
					n.log.Printf("idle for %s: scaled down", time.Since(row.IdleSince).Round(time.Second))
					return 0
				}
			}
		}
	}
}

// launch starts this node's rank of its assigned run.
func (n *node) launch(ctx context.Context, row store.NodeRow, spec Spec) {
	dir := RankDir(filepath.Join(n.p.RunsRoot(), row.RunID), row.Rank)
	if st, err := supervise.ReadState(dir); err != nil || st.Status.Terminal() {
		// Canceled before it started (or unreadable): nothing to run.
		n.release(ctx, row.RunID)
		return
	}
	size, err := LookupSize(spec.VMSize)
	if err != nil {
		size = VMSize{Cores: 1}
	}
	cpus := n.p.Host.CPUSet(size, row.Slot)
	vars := map[string]string{"AML_NODE_ID": n.id, "OMP_NUM_THREADS": strconv.Itoa(size.Cores), "CUDA_VISIBLE_DEVICES": joinInts(n.p.Host.GPUSet(size, row.Slot))}
	if err := supervise.WriteNodeAssignment(dir, supervise.NodeAssignment{NodeID: n.id, CPUs: cpus, Env: vars}); err != nil {
		n.log.Printf("run %s rank %d: %v", row.RunID, row.Rank, err)
		_ = supervise.MarkEnded(dir, run.Failed, run.ReasonSetupFailed, err.Error())
		n.release(ctx, row.RunID)
		return
	}
	logf, err := os.OpenFile(supervise.Layout{Dir: dir}.SupervisorLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		_ = supervise.MarkEnded(dir, run.Failed, run.ReasonSetupFailed, err.Error())
		n.release(ctx, row.RunID)
		return
	}
	defer logf.Close()
	sup := supervise.Command(n.p.AgentCommand)
	cmd := exec.Command(sup[0], hostrun.AgentArgs(sup, "supervise", dir)...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// The rank dies with its node: a killed node's run is requeued, never run twice.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = supervise.MarkEnded(dir, run.Failed, run.ReasonSetupFailed, fmt.Sprintf("starting the supervisor: %v", err))
		n.release(ctx, row.RunID)
		return
	}
	n.log.Printf("run %s rank %d started (supervisor pid %d, cpus %v)", row.RunID, row.Rank, cmd.Process.Pid, cpus)
	p := &rankProc{runID: row.RunID, rank: row.Rank, dir: dir, cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	n.cur = p
}

// watch follows the running rank: its end, a revoked assignment, a failed sibling.
func (n *node) watch(ctx context.Context, row store.NodeRow) {
	p := n.cur
	if !p.exited {
		select {
		case <-p.done:
			p.exited = true
		default:
		}
	}
	if p.exited {
		if st, err := supervise.ReadState(p.dir); err == nil && !st.Status.Terminal() {
			_ = supervise.MarkEnded(p.dir, run.Failed, run.ReasonLost, "the rank's supervisor exited without recording a result")
		}
		n.log.Printf("run %s rank %d ended", p.runID, p.rank)
		n.cur = nil
		n.release(ctx, p.runID)
		return
	}
	if row.RunID != p.runID {
		n.log.Printf("run %s was taken from this node: stopping rank %d", p.runID, p.rank)
		n.stopCurrent(run.ReasonLost)
		return
	}
	if p.rank == 0 {
		n.gangCheck(ctx, p)
	}
}

// gangCheck stops the other ranks as soon as one rank has failed.
func (n *node) gangCheck(ctx context.Context, p *rankProc) {
	q, err := n.p.Store.QueueEntry(ctx, p.runID)
	if err != nil || q.NodeCount < 2 {
		return
	}
	runDir := filepath.Join(n.p.RunsRoot(), p.runID)
	failed := -1
	for r := 0; r < q.NodeCount; r++ {
		if st, err := supervise.ReadState(RankDir(runDir, r)); err == nil && st.Status.Terminal() && st.Status != run.Completed {
			failed = r
			break
		}
	}
	if failed < 0 {
		return
	}
	for r := 0; r < q.NodeCount; r++ {
		dir := RankDir(runDir, r)
		if st, err := supervise.ReadState(dir); err == nil && !st.Status.Terminal() {
			n.log.Printf("run %s: rank %d failed, stopping rank %d", p.runID, failed, r)
			cancelRank(ctx, dir, fmt.Sprintf("rank_%d_failed", failed))
		}
	}
}

func cancelRank(ctx context.Context, dir, reason string) {
	if !supervise.SupervisorStarted(dir) {
		_ = supervise.MarkEnded(dir, run.Canceled, reason, "stopped before it started")
		return
	}
	_ = hostrun.Open(dir).Cancel(ctx, cancelGrace, reason)
}

// stopCurrent cancels the running rank and waits for its supervisor.
func (n *node) stopCurrent(reason string) {
	p := n.cur
	if p == nil {
		return
	}
	cancelRank(context.Background(), p.dir, reason)
	if !p.exited {
		select {
		case <-p.done:
		case <-time.After(cancelGrace + 5*time.Second):
			_ = p.cmd.Process.Kill()
		}
	}
	n.cur = nil
}

// release returns the node to idle and closes the run's queue entry once every
// rank has ended.
func (n *node) release(ctx context.Context, runID string) {
	if err := n.p.Store.ReleaseNode(ctx, n.id, runID); err != nil {
		n.log.Printf("release: %v", err)
	}
	q, err := n.p.Store.QueueEntry(ctx, runID)
	if err != nil || q.State != store.QueueAssigned {
		return
	}
	runDir := filepath.Join(n.p.RunsRoot(), runID)
	for r := 0; r < q.NodeCount; r++ {
		if st, err := supervise.ReadState(RankDir(runDir, r)); err != nil || !st.Status.Terminal() {
			return
		}
	}
	if err := n.p.Store.FinishQueued(ctx, runID); err != nil && !errors.Is(err, store.ErrNotFound) {
		n.log.Printf("finishing %s: %v", runID, err)
	}
}
