package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/pool"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// NodeCounts are a managed pool's node state counts.
type NodeCounts = drivers.NodeCounts

// Compute is a managed pool with its live node counts.
type Compute struct {
	ID, WorkspaceID, Name string
	Spec                  ComputeSpec
	Counts                NodeCounts
	ProvisioningState     string
}

// VMSizeNames lists the node shapes a pool accepts (Azure's D/NC sizes; any
// CUSTOM_<cores>C_<memory>GB shape is accepted too).
func VMSizeNames() []string { return pool.SizeNames() }

// CheckVMSize reports an unknown vm_size, listing the valid ones.
func CheckVMSize(name string) error {
	_, err := pool.LookupSize(name)
	return err
}

// ValidateCompute checks a pool's settings against each other and this host
// (usable at plan time).
func ValidateCompute(spec ComputeSpec) error {
	pool.Normalize(&spec)
	return spec.Validate(pool.ThisHost())
}

// CreateCompute provisions a managed pool and starts min_nodes nodes; with wait
// it returns once they are ready.
func (e *Engine) CreateCompute(ctx context.Context, workspaceID, name string, spec ComputeSpec, wait bool) (*Compute, error) {
	t, err := e.AttachTarget(ctx, workspaceID, KindPool, name, spec, nil)
	if err != nil {
		return nil, err
	}
	c, err := computeOf(t)
	if err != nil || !wait {
		return c, err
	}
	for c.Counts.Idle+c.Counts.Running < c.Spec.MinNodes {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %d node(s) of %s: %w", c.Spec.MinNodes, name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if c, err = e.ReadCompute(ctx, t.ID); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func computeOf(t *Target) (*Compute, error) {
	if t.Kind != KindPool {
		return nil, fmt.Errorf("compute target %q is a %s, not a managed pool", t.Name, t.Kind)
	}
	c := &Compute{ID: t.ID, WorkspaceID: t.WorkspaceID, Name: t.Name, ProvisioningState: t.ProvisioningState}
	if t.Nodes != nil {
		c.Counts = *t.Nodes
	}
	return c, t.Decode(&c.Spec, nil)
}

// ReadCompute returns the pool with live node counts.
func (e *Engine) ReadCompute(ctx context.Context, id string) (*Compute, error) {
	t, err := e.ReadTarget(ctx, id)
	if err != nil {
		return nil, err
	}
	return computeOf(t)
}

// UpdateCompute changes the scale settings in place; nodes pick them up.
func (e *Engine) UpdateCompute(ctx context.Context, id string, spec ComputeSpec) (*Compute, error) {
	t, err := e.UpdateTarget(ctx, id, spec)
	if err != nil {
		return nil, err
	}
	return computeOf(t)
}

// DeleteCompute drains a pool: it refuses while runs are queued or running
// unless force (then they are canceled), stops every node agent and removes the
// pool. Run history stays.
func (e *Engine) DeleteCompute(ctx context.Context, id string, force bool) error {
	return e.detach(ctx, id, force, "force_destroy")
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
	if err := ValidateCompute(ComputeSpec{VMSize: rb.VMSize, MaxNodes: rb.MaxNodes}); err != nil {
		return field.Within("run_based_compute", err)
	}
	if nodeCount > rb.MaxNodes {
		return fieldErr("run_based_compute.max_nodes", "the run configuration asks for node_count = %d, more than max_nodes = %d", nodeCount, rb.MaxNodes)
	}
	return nil
}

// createRunBasedPool makes the pool of one run: no minimum, nodes stop as soon
// as they are idle, and the engine deletes it when the run has ended.
func (e *Engine) createRunBasedPool(ctx context.Context, s *store.Store, runID string, rb RunBasedCompute) (string, drivers.Driver, error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "rb-" + hex.EncodeToString(b)
	spec := ComputeSpec{VMSize: rb.VMSize, MaxNodes: rb.MaxNodes, RunBased: runID}
	pool.Normalize(&spec)
	body, _ := json.Marshal(spec)
	if err := s.PutTarget(ctx, store.TargetRow{Name: name, Kind: KindPool, Spec: body}); err != nil {
		return "", nil, err
	}
	drv, err := e.driverFor(ctx, s, name)
	return name, drv, err
}

// releaseRunBasedPool deletes a finished run's own pool.
func (e *Engine) releaseRunBasedPool(ctx context.Context, s *store.Store, rec *run.Record) {
	if rec.Pool == "" || !rec.Status.Terminal() {
		return
	}
	_ = e.DeleteCompute(context.WithoutCancel(ctx), TargetID(s.UID, rec.Pool), true)
}

// NotePlannedTarget records that this process planned the creation of a
// compute target. Terraform plans a target before the runs that refer to it,
// in the same provider process, so CheckPlacement can tell a target this apply
// creates from one that exists nowhere.
func (e *Engine) NotePlannedTarget(workspaceID, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.planned[cleanID(workspaceID)+targetSep+name] = true
}

func (e *Engine) plannedTarget(workspaceID, name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.planned[cleanID(workspaceID)+targetSep+name]
}

// CheckPlacement is the plan-time check of a run against its target, for what
// can be known before anything is applied: the target exists (or this plan
// creates it), it can run node_count nodes, and, where preparing the
// environment is local and cheap (this machine, a pool), the run
// configuration's environment can be had (an interpreter that exists, a Python
// version that is installed). Whatever does not exist yet (created in the same
// apply) is checked at apply.
func (e *Engine) CheckPlacement(ctx context.Context, workspaceID, targetName, runConfigID string) error {
	s, err := e.open(ctx, workspaceID)
	if err != nil {
		return nil
	}
	rc, err := e.ReadRunConfig(ctx, runConfigID)
	if err != nil {
		return nil
	}
	if targetName == RunBasedTarget {
		targetName = LocalTarget // its pool's nodes run here
	}
	drv, err := e.driverFor(ctx, s, targetName)
	if err != nil {
		var fe *FieldError
		if errors.As(err, &fe) && !e.plannedTarget(s.UID, targetName) {
			return fieldErr("compute_target", "%s; if this configuration creates it, refer to it (compute_target = aml_remote_compute.<name>.name or aml_compute.<name>.name) so that Terraform plans it first", fe.Msg)
		}
		return nil
	}
	if err := checkFits(ctx, drv, "compute_target", rc.Spec, targetName); err != nil {
		return err
	}
	caps, err := drv.Capabilities(ctx)
	if err != nil || !caps.PlanTimeEnvironment {
		return nil
	}
	key := s.UID + targetSep + targetName + "\x00" + rc.EnvironmentHash
	e.mu.Lock()
	cached, seen := e.planEnv[key]
	e.mu.Unlock()
	if !seen {
		_, perr := drv.PrepareEnvironment(ctx, rc.Spec.Environment)
		var fe *FieldError
		if errors.As(perr, &fe) {
			cached = fieldErr("run_configuration_id", "run configuration %q cannot run on target %q: %v", rc.Spec.Name, targetName, perr)
		}
		e.mu.Lock()
		e.planEnv[key] = cached
		e.mu.Unlock()
	}
	return cached
}

// checkFits refuses a run configuration whose framework or node_count the
// target cannot run.
func checkFits(ctx context.Context, drv drivers.Driver, attr string, rc RunConfigSpec, targetName string) error {
	caps, err := drv.Capabilities(ctx)
	if err != nil {
		return err
	}
	if fw := rc.Framework; fw != "" && len(caps.Frameworks) > 0 && !slices.Contains(caps.Frameworks, fw) {
		return fieldErr(attr, "run configuration %q has framework = %q, but compute target %q runs %s; use a target that runs %s (PySpark: an aml_hdinsight_attachment)",
			rc.Name, fw, targetName, strings.Join(caps.Frameworks, ", "), fw)
	}
	nodeCount := rc.NodeCount
	if nodeCount <= 1 {
		return nil
	}
	rcName := rc.Name
	switch {
	case caps.MaxNodes <= 1:
		return fieldErr(attr, "run configuration %q asks for node_count = %d, but compute target %q runs one node; use an aml_compute pool", rcName, nodeCount, targetName)
	case nodeCount > caps.MaxNodes:
		return fieldErr(attr, "run configuration %q asks for node_count = %d, but %s", rcName, nodeCount, caps.MaxNodesReason)
	}
	return nil
}
