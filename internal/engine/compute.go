package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
	"github.com/openaml/terraform-provider-aml/internal/engine/target/cluster"
	"github.com/openaml/terraform-provider-aml/internal/engine/target/local"
)

// poolDriver marks the managed pool's driver (it runs multi-node runs).
type poolDriver struct{ *cluster.Driver }

func (e *Engine) managedPool(s *store.Store, name string) *cluster.Pool {
	return &cluster.Pool{
		Store: s, Name: name, AgentCommand: e.opts.AgentCommand,
		EnvRoot: filepath.Join(s.Dir, EnvsDir), EnvCacheBytes: e.opts.EnvCacheMaxBytes,
		Host: cluster.ThisHost(),
	}
}

// ComputeSpec is an aml_compute as configured.
type ComputeSpec = cluster.Spec

// Compute is a managed pool with its live node counts.
type Compute struct {
	ID, WorkspaceID, Name string
	Spec                  ComputeSpec
	Counts                cluster.Counts
	ProvisioningState     string
}

// ValidateCompute checks a pool's settings against each other and this host
// (usable at plan time).
func ValidateCompute(spec ComputeSpec) error {
	if err := spec.Validate(cluster.ThisHost()); err != nil {
		return asFieldError(err)
	}
	return nil
}

func asFieldError(err error) error {
	if fe, ok := err.(*cluster.FieldError); ok {
		return &FieldError{Attr: fe.Attr, Msg: fe.Msg}
	}
	return err
}

func normalizeCompute(spec *ComputeSpec) {
	if spec.VMPriority == "" {
		spec.VMPriority = "Dedicated"
	}
	if size, err := cluster.LookupSize(spec.VMSize); err == nil {
		spec.VMSize = size.Name
	}
}

// CreateCompute provisions a managed pool and starts min_nodes nodes; with wait
// it returns once they are ready.
func (e *Engine) CreateCompute(ctx context.Context, workspaceID, name string, spec ComputeSpec, wait bool) (*Compute, error) {
	s, err := e.open(ctx, workspaceID)
	if err != nil {
		return nil, fieldErr("workspace_id", "%v", err)
	}
	if !TargetNamePattern.MatchString(name) {
		return nil, fieldErr("name", "%q is not a valid compute name: use 2 to 16 letters, digits or '-', starting with a letter", name)
	}
	for _, r := range ReservedTargetNames {
		if strings.EqualFold(name, r) {
			return nil, fieldErr("name", "%q is reserved; choose another name", name)
		}
	}
	if existing, err := s.GetTarget(ctx, name); err == nil {
		return nil, fieldErr("name", "workspace already has a compute target %q (kind %s); names are unique across kinds", name, existing.Kind)
	}
	normalizeCompute(&spec)
	if err := ValidateCompute(spec); err != nil {
		return nil, err
	}
	body, _ := json.Marshal(spec)
	if err := s.PutTarget(ctx, store.TargetRow{Name: name, Kind: cluster.Kind, Spec: body}); err != nil {
		return nil, err
	}
	if err := e.managedPool(s, name).EnsureNodes(ctx); err != nil {
		return nil, err
	}
	if wait {
		if err := e.waitNodes(ctx, s, name, spec.MinNodes); err != nil {
			return nil, err
		}
	}
	return e.ReadCompute(ctx, TargetID(s.Dir, name))
}

// waitNodes waits until n nodes of the pool are idle or running.
func (e *Engine) waitNodes(ctx context.Context, s *store.Store, name string, n int) error {
	for {
		c, err := e.managedPool(s, name).NodeCounts(ctx)
		if err != nil {
			return err
		}
		if c.Idle+c.Running >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d node(s) of %s: %w", n, name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ReadCompute returns the pool with live node counts.
func (e *Engine) ReadCompute(ctx context.Context, id string) (*Compute, error) {
	wsID, name, err := ParseTargetID(id)
	if err != nil {
		return nil, err
	}
	s, err := e.open(ctx, wsID)
	if err != nil {
		return nil, err
	}
	p := e.managedPool(s, name)
	spec, err := p.LoadSpec(ctx)
	if err != nil {
		return nil, err
	}
	counts, err := p.NodeCounts(ctx)
	if err != nil {
		return nil, err
	}
	return &Compute{ID: TargetID(s.Dir, name), WorkspaceID: s.Dir, Name: name, Spec: spec, Counts: counts, ProvisioningState: "Succeeded"}, nil
}

// UpdateCompute changes the scale settings in place; nodes pick them up.
func (e *Engine) UpdateCompute(ctx context.Context, id string, spec ComputeSpec) (*Compute, error) {
	wsID, name, err := ParseTargetID(id)
	if err != nil {
		return nil, err
	}
	s, err := e.open(ctx, wsID)
	if err != nil {
		return nil, err
	}
	normalizeCompute(&spec)
	if err := ValidateCompute(spec); err != nil {
		return nil, err
	}
	body, _ := json.Marshal(spec)
	if err := s.PutTarget(ctx, store.TargetRow{Name: name, Kind: cluster.Kind, Spec: body}); err != nil {
		return nil, err
	}
	if err := e.managedPool(s, name).EnsureNodes(ctx); err != nil {
		return nil, err
	}
	return e.ReadCompute(ctx, id)
}

// DeleteCompute drains a pool: it refuses while runs are queued or running
// unless force (then they are canceled), stops every node agent and removes the
// pool. Run history stays.
func (e *Engine) DeleteCompute(ctx context.Context, id string, force bool) error {
	wsID, name, err := ParseTargetID(id)
	if err != nil {
		return err
	}
	s, err := e.open(ctx, wsID)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	p := e.managedPool(s, name)
	if _, err := p.LoadSpec(ctx); IsNotFound(err) {
		return nil
	}
	active, err := s.ActiveQueue(ctx, name)
	if err != nil {
		return err
	}
	if len(active) > 0 && !force {
		ids := make([]string, len(active))
		for i, q := range active {
			ids[i] = q.RunID
		}
		return fmt.Errorf("compute %q has %d queued or running run(s) (%s); destroy them first, or set force_destroy = true to cancel them", name, len(active), strings.Join(ids, ", "))
	}
	for _, q := range active {
		if _, err := e.cancel(ctx, s, q.RunID, run.ReasonCanceled); err != nil {
			return fmt.Errorf("canceling run %s: %w", q.RunID, err)
		}
	}
	if err := s.SetNodeState(ctx, name, store.NodeLeaving); err != nil {
		return err
	}
	// Node agents see "leaving" within a tick and remove themselves.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		nodes, err := s.Nodes(ctx, name)
		if err != nil {
			return err
		}
		if len(nodes) == 0 {
			break
		}
		if _, err := p.Store.ReapNodes(ctx, name, cluster.LeaseTimeout, func(n store.NodeRow) bool { return local.ProcessAlive(n.PID, n.Ticks) }); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Whatever did not leave in time is stopped by PID (checked against its start time).
	nodes, err := s.Nodes(ctx, name)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if local.ProcessAlive(n.PID, n.Ticks) {
			_ = syscall.Kill(n.PID, syscall.SIGKILL)
		}
	}
	if err := s.DeletePool(ctx, name); err != nil {
		return err
	}
	return s.DeleteTarget(ctx, name)
}

// CheckPlacement is the plan-time check that a run configuration fits its target:
// a node_count the target cannot provide is refused before anything is applied.
// Whatever does not exist yet (created in the same apply) is checked at apply.
func (e *Engine) CheckPlacement(ctx context.Context, workspaceID, targetName, runConfigID string) error {
	s, err := e.open(ctx, workspaceID)
	if err != nil {
		return nil
	}
	rc, err := e.ReadRunConfig(ctx, runConfigID)
	if err != nil || rc.Spec.NodeCount <= 1 {
		return nil
	}
	if targetName == LocalTarget {
		return fieldErr("compute_target", "run configuration %q asks for node_count = %d, but %q runs one node; use an aml_compute pool", rc.Spec.Name, rc.Spec.NodeCount, targetName)
	}
	row, err := s.GetTarget(ctx, targetName)
	if err != nil {
		return nil
	}
	if row.Kind != cluster.Kind {
		return fieldErr("compute_target", "run configuration %q asks for node_count = %d, but compute target %q (%s) runs one node; use an aml_compute pool", rc.Spec.Name, rc.Spec.NodeCount, targetName, row.Kind)
	}
	spec, err := e.managedPool(s, targetName).LoadSpec(ctx)
	if err == nil && rc.Spec.NodeCount > spec.MaxNodes {
		return fieldErr("compute_target", "run configuration %q asks for node_count = %d, but pool %q has max_nodes = %d", rc.Spec.Name, rc.Spec.NodeCount, targetName, spec.MaxNodes)
	}
	return nil
}

// RunBasedTarget is the compute_target of a run that gets a pool of its own.
const RunBasedTarget = "amlcompute"

// RunBasedCompute is the pool a run-based run asks for.
type RunBasedCompute struct {
	VMSize   string
	MaxNodes int
}

func checkRunBased(rb *RunBasedCompute, nodeCount int) error {
	if rb == nil {
		return fieldErr("run_based_compute", "is required with compute_target = %q: it says which pool to create for the run (vm_size, max_nodes)", RunBasedTarget)
	}
	spec := ComputeSpec{VMSize: rb.VMSize, MaxNodes: rb.MaxNodes}
	if err := ValidateCompute(spec); err != nil {
		fe := asFieldError(err).(*FieldError)
		return fieldErr("run_based_compute."+fe.Attr, "%s", fe.Msg)
	}
	if nodeCount > rb.MaxNodes {
		return fieldErr("run_based_compute.max_nodes", "the run configuration asks for node_count = %d, more than max_nodes = %d", nodeCount, rb.MaxNodes)
	}
	return nil
}

// createRunBasedPool makes the pool of one run: no minimum, nodes stop as soon
// as they are idle, and the engine deletes it when the run has ended.
func (e *Engine) createRunBasedPool(ctx context.Context, s *store.Store, runID string, rb RunBasedCompute) (string, runDriver, error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "rb-" + hex.EncodeToString(b)
	spec := ComputeSpec{VMSize: rb.VMSize, MaxNodes: rb.MaxNodes, RunBased: runID}
	normalizeCompute(&spec)
	body, _ := json.Marshal(spec)
	if err := s.PutTarget(ctx, store.TargetRow{Name: name, Kind: cluster.Kind, Spec: body}); err != nil {
		return "", nil, err
	}
	return name, poolDriver{&cluster.Driver{Pool: e.managedPool(s, name)}}, nil
}

// releaseRunBasedPool deletes a finished run's own pool.
func (e *Engine) releaseRunBasedPool(ctx context.Context, s *store.Store, rec *run.Record) {
	if rec.Pool == "" || !rec.Status.Terminal() {
		return
	}
	_ = e.DeleteCompute(context.WithoutCancel(ctx), TargetID(s.Dir, rec.Pool), true)
}
