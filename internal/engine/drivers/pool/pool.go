package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// Kind is the target kind of managed pools in the workspace store.
const Kind = "amlcompute"

// Lease timings: a node heartbeats every HeartbeatEvery; one silent for
// LeaseTimeout (or whose process is gone) is reaped and its run requeued.
var (
	HeartbeatEvery = 500 * time.Millisecond
	LeaseTimeout   = 10 * time.Second
)

// Spec is an aml_compute as configured.
type Spec struct {
	VMSize                     string `json:"vm_size"`
	MinNodes                   int    `json:"min_nodes"`
	MaxNodes                   int    `json:"max_nodes"`
	IdleSecondsBeforeScaledown int    `json:"idle_seconds_before_scaledown"`
	VMPriority                 string `json:"vm_priority"`
	// RunBased names the one run a run-based pool exists for; the pool removes
	// itself when that run has ended.
	RunBased string `json:"run_based,omitempty"`
}

// Validate checks the scale settings against each other and the host.
func (s Spec) Validate(h Host) error {
	size, err := LookupSize(s.VMSize)
	if err != nil {
		return field.Errorf("vm_size", "%v", err)
	}
	if err := h.Fits(size); err != nil {
		return field.Errorf("vm_size", "%v", err)
	}
	if s.MaxNodes < 1 {
		return field.Errorf("max_nodes", "must be at least 1, got %d", s.MaxNodes)
	}
	if s.MinNodes < 0 || s.MinNodes > s.MaxNodes {
		return field.Errorf("min_nodes", "must be between 0 and max_nodes (%d), got %d", s.MaxNodes, s.MinNodes)
	}
	if s.IdleSecondsBeforeScaledown < 0 {
		return field.Errorf("idle_seconds_before_scaledown", "must not be negative, got %d", s.IdleSecondsBeforeScaledown)
	}
	return nil
}

// Pool is one managed pool of a workspace, as the engine and its node agents see it.
type Pool struct {
	Store         *store.Store
	Name          string
	AgentCommand  []string // how to start `agent node ...`
	EnvRoot       string
	EnvCacheBytes int64
	Host          Host
}

// LoadSpec reads the pool's current settings.
func (p *Pool) LoadSpec(ctx context.Context) (Spec, error) {
	var s Spec
	row, err := p.Store.GetTarget(ctx, p.Name)
	if err != nil {
		return s, err
	}
	if row.Kind != Kind {
		return s, fmt.Errorf("compute target %q is a %s, not a managed pool", p.Name, row.Kind)
	}
	return s, json.Unmarshal(row.Spec, &s)
}

// RunsRoot is where the workspace keeps run directories.
func (p *Pool) RunsRoot() string { return filepath.Join(p.Store.Dir, store.RunsDir) }

// RankDir is the run directory of one rank: rank 0 is the run's own directory.
func RankDir(runDir string, rank int) string {
	if rank == 0 {
		return runDir
	}
	return filepath.Join(runDir, supervise.ControlDir, "rank-"+strconv.Itoa(rank))
}

func (p *Pool) logDir() string { return filepath.Join(p.Store.Dir, "pools", p.Name) }

// bellFile is the pool's queue bell: written after a run is queued (or queued
// again), so idle nodes of this machine, which watch it, claim at once instead
// of at their next tick. The tick stays as the fallback.
const bellFile = "queue.bell"

func (p *Pool) bellPath() string { return filepath.Join(p.logDir(), bellFile) }

// Ring tells the pool's idle nodes that something was queued.
func (p *Pool) Ring() {
	if err := os.WriteFile(p.bellPath(), nil, 0o644); err != nil {
		if os.MkdirAll(p.logDir(), 0o755) == nil {
			_ = os.WriteFile(p.bellPath(), nil, 0o644)
		}
	}
}

// fenceWait bounds how long a reaper waits for a lost node's processes to stop.
var fenceWait = 5 * time.Second

// Reap removes dead nodes and requeues (once) or fails their runs.
//
// A lost node of this machine is fenced first: the node agent (if it still
// runs, say it stopped heartbeating) and every process below it, its rank's
// supervisor and script, are killed and gone before the run is requeued. A
// supervisor outliving its node would otherwise record its attempt's end
// (killed, lost) in the run directory after the requeue, where the next
// attempt's node and the engine take it for the run's result.
func (p *Pool) Reap(ctx context.Context) error {
	nodes, err := p.Store.Nodes(ctx, p.Name)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n.PID == 0 || !nodeHere(n) || (time.Since(n.HeartbeatAt) <= LeaseTimeout && nodeAlive(n)) {
			continue
		}
		if !supervise.StopTree(n.PID, n.Ticks, fenceWait) {
			return nil // not stopped yet: reaped at a later pass
		}
	}
	lost, err := p.Store.ReapNodes(ctx, p.Name, LeaseTimeout, nodeAlive)
	if err != nil {
		return err
	}
	requeued := false
	defer func() {
		if requeued {
			p.Ring()
		}
	}()
	for _, l := range lost {
		requeued = requeued || l.Requeued
		q, err := p.Store.QueueEntry(ctx, l.RunID)
		if err != nil {
			return err
		}
		runDir := filepath.Join(p.RunsRoot(), l.RunID)
		for rank := 0; rank < q.NodeCount; rank++ {
			dir := RankDir(runDir, rank)
			if l.Requeued {
				err = supervise.ResetForRequeue(dir, "a node of this run was lost; the run is queued again (once)")
			} else {
				err = supervise.MarkEnded(dir, run.Failed, run.ReasonLost, "a node of this run was lost twice")
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// EnsureNodes starts node agents so the pool has at least min_nodes and enough
// for its queued runs, never more than max_nodes.
func (p *Pool) EnsureNodes(ctx context.Context) error {
	spec, err := p.LoadSpec(ctx)
	if err != nil {
		return err
	}
	if err := p.Reap(ctx); err != nil {
		return err
	}
	nodes, err := p.Store.Nodes(ctx, p.Name)
	if err != nil {
		return err
	}
	_, demand, err := p.Store.QueueDemand(ctx, p.Name)
	if err != nil {
		return err
	}
	busy, live := 0, 0
	for _, n := range nodes {
		if n.State == store.NodeLeaving {
			continue
		}
		live++
		if n.State == store.NodeRunning {
			busy++
		}
	}
	want := busy + demand
	if want < spec.MinNodes {
		want = spec.MinNodes
	}
	if want > spec.MaxNodes {
		want = spec.MaxNodes
	}
	if want <= live {
		return nil
	}
	added, err := p.Store.ReserveNodes(ctx, p.Name, want, func(slot int) string {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		return fmt.Sprintf("%s-n%d-%s", p.Name, slot, hex.EncodeToString(b))
	})
	if err != nil {
		return err
	}
	for _, n := range added {
		if err := p.startAgent(n.ID); err != nil {
			_ = p.Store.RemoveNode(ctx, n.ID)
			return fmt.Errorf("starting node %s: %w", n.ID, err)
		}
	}
	return nil
}

// startAgent launches `agent node <workspace> <pool> <node>` detached, so the
// node outlives Terraform.
func (p *Pool) startAgent(nodeID string) error {
	if err := os.MkdirAll(p.logDir(), 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(p.logDir(), nodeID+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(p.AgentCommand[0], hostrun.AgentArgs(p.AgentCommand, "node", p.Store.Dir, p.Name, nodeID)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "AML_AGENT=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }() // reap while we live; init reaps after
	return nil
}

// NodeCounts observes the pool (reaping dead nodes first).
func (p *Pool) NodeCounts(ctx context.Context) (drivers.NodeCounts, error) {
	var c drivers.NodeCounts
	spec, err := p.LoadSpec(ctx)
	if err != nil {
		return c, err
	}
	if err := p.Reap(ctx); err != nil {
		return c, err
	}
	nodes, err := p.Store.Nodes(ctx, p.Name)
	if err != nil {
		return c, err
	}
	for _, n := range nodes {
		switch n.State {
		case store.NodeIdle:
			c.Idle++
		case store.NodeRunning:
			c.Running++
		case store.NodeStarting:
			c.Preparing++
		case store.NodeLeaving:
			c.Leaving++
		}
	}
	c.Current = len(nodes) - c.Leaving
	queued, demand, err := p.Store.QueueDemand(ctx, p.Name)
	if err != nil {
		return c, err
	}
	c.Queued = queued
	c.Target = c.Running + demand
	if c.Target < spec.MinNodes {
		c.Target = spec.MinNodes
	}
	if c.Target > spec.MaxNodes {
		c.Target = spec.MaxNodes
	}
	c.AllocationState = "Steady"
	if c.Current != c.Target || c.Preparing > 0 || c.Leaving > 0 {
		c.AllocationState = "Resizing"
	}
	return c, nil
}

// freePort picks the MASTER_PORT of a multi-node run.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
