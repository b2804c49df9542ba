package pool

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"syscall"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

func init() { drivers.Register(kind{}) }

// Of is the pool of a workspace's target of that name.
func Of(w *drivers.Workspace, name string) *Pool {
	return &Pool{
		Store: w.Store, Name: name, AgentCommand: w.AgentCommand,
		EnvRoot: w.EnvRoot(), EnvCacheBytes: w.EnvCacheBytes,
		Host: ThisHost(),
	}
}

// Normalize fills a spec's defaults and canonical size name.
func Normalize(spec *Spec) {
	if spec.VMPriority == "" {
		spec.VMPriority = "Dedicated"
	}
	if size, err := LookupSize(spec.VMSize); err == nil {
		spec.VMSize = size.Name
	}
}

type kind struct{}

func (kind) Name() string { return Kind }

func decodeSpec(raw json.RawMessage) (Spec, error) {
	var spec Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return spec, err
	}
	Normalize(&spec)
	return spec, spec.Validate(ThisHost())
}

// Attach checks the settings against each other and this host.
func (kind) Attach(ctx context.Context, w *drivers.Workspace, name string, raw, secrets json.RawMessage) (drivers.Target, any, error) {
	spec, err := decodeSpec(raw)
	if err != nil {
		return drivers.Target{}, nil, err
	}
	body, _ := json.Marshal(spec)
	return drivers.Target{Spec: body}, nil, nil
}

// Update changes the scale settings in place; nodes pick them up.
func (kind) Update(ctx context.Context, w *drivers.Workspace, t drivers.Target, raw json.RawMessage) (drivers.Target, error) {
	spec, err := decodeSpec(raw)
	if err != nil {
		return t, err
	}
	t.Spec, _ = json.Marshal(spec)
	return t, nil
}

// Apply starts nodes up to min_nodes (and for what is queued).
func (kind) Apply(ctx context.Context, w *drivers.Workspace, t drivers.Target) error {
	return Of(w, t.Name).EnsureNodes(ctx)
}

func (kind) Open(ctx context.Context, w *drivers.Workspace, t drivers.Target) (drivers.Driver, error) {
	return &Driver{Pool: Of(w, t.Name)}, nil
}

// Describe reports one node's shape and the live node counts.
func (kind) Describe(ctx context.Context, w *drivers.Workspace, t drivers.Target) (drivers.Description, error) {
	p := Of(w, t.Name)
	spec, err := p.LoadSpec(ctx)
	if err != nil {
		return drivers.Description{}, err
	}
	counts, err := p.NodeCounts(ctx)
	if err != nil {
		return drivers.Description{}, err
	}
	size, _ := LookupSize(spec.VMSize)
	facts := drivers.Facts{Cores: size.Cores, MemoryBytes: size.MemoryMB << 20, GPUs: size.GPUs, OS: runtime.GOOS, Arch: runtime.GOARCH}
	return drivers.Description{Facts: facts, ProvisioningState: "Succeeded", Nodes: &counts}, nil
}

// Release drains the pool: every node agent is asked to leave, and whatever
// has not left in time is stopped by PID (checked against its start time);
// then the queue and node rows go.
func (kind) Release(ctx context.Context, w *drivers.Workspace, t drivers.Target) error {
	s := w.Store
	if err := s.SetNodeState(ctx, t.Name, store.NodeLeaving); err != nil {
		return err
	}
	// Node agents see "leaving" within a tick and remove themselves.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		nodes, err := s.Nodes(ctx, t.Name)
		if err != nil {
			return err
		}
		if len(nodes) == 0 {
			break
		}
		if _, err := s.ReapNodes(ctx, t.Name, LeaseTimeout, nodeAlive); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	nodes, err := s.Nodes(ctx, t.Name)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if nodeHere(n) && nodeAlive(n) {
			_ = syscall.Kill(n.PID, syscall.SIGKILL)
		}
	}
	if err := s.DeletePool(ctx, t.Name); err != nil {
		return fmt.Errorf("removing pool %s: %w", t.Name, err)
	}
	return nil
}

// nodeAlive reports whether a node row's process still runs. Another
// machine's node (a shared workspace) is taken as alive: its process cannot
// be seen from here, and its lease (heartbeat) decides.
func nodeAlive(n store.NodeRow) bool {
	if !nodeHere(n) {
		return true
	}
	return supervise.ProcessAlive(n.PID, n.Ticks)
}

// nodeHere reports whether a node's agent runs on this machine.
func nodeHere(n store.NodeRow) bool { return n.Host == "" || n.Host == store.Hostname() }
