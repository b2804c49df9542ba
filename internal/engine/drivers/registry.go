package drivers

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"sync"

	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// Workspace is what the engine hands a kind: the workspace's store and where its
// files live, and what this process shares between targets.
type Workspace struct {
	Store *store.Store
	// AgentCommand starts this program's agent subcommands, e.g. [exe, "agent"].
	AgentCommand []string
	// EnvCacheBytes bounds each host's cache of built environments (0: unbounded).
	EnvCacheBytes int64
	// SSH is this process's SSH connection pool (one connection per host).
	SSH *remote.Pool
	// CollectMaxBytes bounds what a remote run's outputs and logs may bring
	// back to the engine host (0: the kind's default).
	CollectMaxBytes int64
}

// Dir is the workspace's directory on the engine host.
func (w *Workspace) Dir() string { return w.Store.Dir }

// RunsRoot is where the engine host keeps run directories (and brings remote
// runs' results back to).
func (w *Workspace) RunsRoot() string { return filepath.Join(w.Store.Dir, store.RunsDir) }

// EnvRoot is the engine host's cache of built environments.
func (w *Workspace) EnvRoot() string { return filepath.Join(w.Store.Dir, EnvsDir) }

// Blobs is the workspace's content-addressed store of snapshot files.
func (w *Workspace) Blobs() snapshot.BlobStore { return snapshot.BlobStore{Root: w.Store.BlobsPath()} }

// EnvsDir holds a workspace's cache of built environments.
const EnvsDir = "envs"

// AgentPath is the binary a remote kind stages on its host as the agent.
func (w *Workspace) AgentPath() string { return w.AgentCommand[0] }

// Target is a target as the workspace records it: its kind's own spec (the
// configuration) and state (what attaching learned) as JSON.
type Target = store.TargetRow

// Description is how the aml_compute_target data source shows a target.
type Description struct {
	Facts Facts
	// Address is where a remote target is reached; empty for this machine.
	Address           string
	ProvisioningState string
	// Nodes are live node counts, for kinds that manage nodes.
	Nodes *NodeCounts
}

// NodeCounts are a node pool's state counts, as Azure's AmlCompute reports them.
type NodeCounts struct {
	Idle, Running, Preparing, Unusable, Leaving, Preempted int
	Current, Target                                        int
	Queued                                                 int
	AllocationState                                        string // Steady or Resizing
}

// Kind is one compute target kind. Each kind's package registers one value
// (Register) and is then reached only through this interface.
type Kind interface {
	// Name is the kind as recorded in the workspace.
	Name() string

	// Attach checks a new target's configuration (spec and secrets are the
	// JSON of the kind's own types), probes what it must, and returns the
	// record to store (Spec, State) and the secrets to keep (nil: none).
	// Nothing is recorded when it fails. Errors in the configuration are
	// *field.Error naming the attribute.
	Attach(ctx context.Context, w *Workspace, name string, spec, secrets json.RawMessage) (Target, any, error)

	// Apply brings a target to its recorded settings once they are stored,
	// after Attach and after an in-place update (a pool starts min_nodes).
	Apply(ctx context.Context, w *Workspace, t Target) error

	// Open returns the driver of a recorded target. It must not contact a
	// remote host.
	Open(ctx context.Context, w *Workspace, t Target) (Driver, error)

	// Describe reports a recorded target; it may observe live local state
	// (node counts) but does not contact a remote host.
	Describe(ctx context.Context, w *Workspace, t Target) (Description, error)

	// Release frees what a target holds (node agents, ...) once no run is
	// active on it: before it is detached, and when its workspace is deleted.
	// Files on remote hosts are never deleted.
	Release(ctx context.Context, w *Workspace, t Target) error
}

// Updater is a Kind whose settings change in place. Update checks the new spec
// against the recorded target and returns the record to store.
type Updater interface {
	Update(ctx context.Context, w *Workspace, t Target, spec json.RawMessage) (Target, error)
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Kind{}
)

// Register makes a kind known; a kind registers once, from its package's init.
func Register(k Kind) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[k.Name()]; dup {
		panic(fmt.Sprintf("drivers: kind %q registered twice", k.Name()))
	}
	registry[k.Name()] = k
}

// Lookup returns the registered kind of that name.
func Lookup(name string) (Kind, error) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	if k, ok := registry[name]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("compute target kind %q is not known to this provider version (known: %v)", name, kindNames())
}

// Kinds lists the registered kinds' names, sorted.
func Kinds() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return kindNames()
}

func kindNames() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Decode reads a target record's spec and state into a kind's own types.
func Decode[S, T any](t Target) (S, T, error) {
	var spec S
	var st T
	if err := json.Unmarshal(t.Spec, &spec); err != nil {
		return spec, st, fmt.Errorf("compute target %q: %w", t.Name, err)
	}
	if len(t.State) > 0 {
		if err := json.Unmarshal(t.State, &st); err != nil {
			return spec, st, fmt.Errorf("compute target %q: %w", t.Name, err)
		}
	}
	return spec, st, nil
}
