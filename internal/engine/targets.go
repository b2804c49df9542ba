package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/local"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// ReservedTargetNames cannot be used for attached targets.
var ReservedTargetNames = []string{LocalTarget, RunBasedTarget}

// TargetNamePattern is Azure's rule for compute names: 2 to 16 letters, digits
// and '-', starting with a letter.
var TargetNamePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{1,15}$`)

const targetSep = "/targets/"

// CheckTargetName is the one check of a new compute target's name, whatever
// its kind.
func CheckTargetName(name string) error {
	if !TargetNamePattern.MatchString(name) {
		return fieldErr("name", "%q is not a valid compute name: use 2 to 16 letters, digits or '-', starting with a letter", name)
	}
	for _, r := range ReservedTargetNames {
		if strings.EqualFold(name, r) {
			return fieldErr("name", "%q is reserved; choose another name", name)
		}
	}
	return nil
}

// Target is an attached compute target of any kind.
type Target struct {
	ID                string
	WorkspaceID       string
	Name              string
	Kind              string
	ProvisioningState string
	CreatedAt         time.Time
	Facts             drivers.Facts
	// Address is where a remote target is reached.
	Address string
	// Nodes are live node counts of kinds that manage nodes.
	Nodes *drivers.NodeCounts
	// Spec and State are the kind's own records (see Decode).
	Spec, State json.RawMessage
}

// Decode reads the kind's spec and state types (e.g. RemoteSpec, RemoteState);
// a nil argument is skipped.
func (t *Target) Decode(spec, state any) error {
	if spec != nil {
		if err := json.Unmarshal(t.Spec, spec); err != nil {
			return fmt.Errorf("compute target %q: %w", t.Name, err)
		}
	}
	if state != nil && len(t.State) > 0 {
		if err := json.Unmarshal(t.State, state); err != nil {
			return fmt.Errorf("compute target %q: %w", t.Name, err)
		}
	}
	return nil
}

// TargetID builds "<workspace_id>/targets/<name>".
func TargetID(workspaceID, name string) string { return cleanID(workspaceID) + targetSep + name }

// ParseTargetID splits a target id.
func ParseTargetID(id string) (workspaceID, name string, err error) {
	return parseChildID(id, targetSep, TargetNamePattern, "compute target id", "{name}")
}

func (e *Engine) sshPool() *remote.Pool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pool == nil {
		e.pool = remote.NewPool()
	}
	return e.pool
}

// workspace is what kinds get of a workspace.
func (e *Engine) workspace(s *store.Store) *drivers.Workspace {
	return &drivers.Workspace{Store: s, AgentCommand: e.opts.AgentCommand, EnvCacheBytes: e.opts.EnvCacheMaxBytes, SSH: e.sshPool(), CollectMaxBytes: e.opts.CollectMaxBytes}
}

// targetRecord returns a target's record and kind; "local" has no record.
func (e *Engine) targetRecord(ctx context.Context, s *store.Store, name, attr string) (drivers.Target, drivers.Kind, error) {
	if name == LocalTarget || name == "" {
		k, err := drivers.Lookup(local.Name)
		return drivers.Target{Name: LocalTarget, Kind: local.Name}, k, err
	}
	row, err := s.GetTarget(ctx, name)
	if IsNotFound(err) {
		names, _ := s.TargetNames(ctx)
		return row, nil, fieldErr(attr, "unknown compute target %q; this workspace has: %s", name, strings.Join(append([]string{LocalTarget}, names...), ", "))
	}
	if err != nil {
		return row, nil, err
	}
	k, err := drivers.Lookup(row.Kind)
	if err != nil {
		return row, nil, fmt.Errorf("compute target %q: %w", name, err)
	}
	return row, k, nil
}

// driverFor returns the driver of a compute target of workspace s.
func (e *Engine) driverFor(ctx context.Context, s *store.Store, name string) (drivers.Driver, error) {
	t, k, err := e.targetRecord(ctx, s, name, "compute_target")
	if err != nil {
		return nil, err
	}
	return k.Open(ctx, e.workspace(s), t)
}

func (e *Engine) recoverRun(ctx context.Context, s *store.Store, rec *run.Record) (drivers.Execution, error) {
	name := rec.Target
	if rec.Pool != "" {
		name = rec.Pool
	}
	drv, err := e.driverFor(ctx, s, name)
	if err != nil {
		return nil, err
	}
	return drv.Recover(ctx, rec.Handle)
}

// AttachTarget checks, probes and records a new compute target of a kind; spec
// and secrets are the kind's configuration types. Nothing is recorded when any
// step fails.
func (e *Engine) AttachTarget(ctx context.Context, workspaceID, kind, name string, spec, secrets any) (*Target, error) {
	s, err := e.open(ctx, workspaceID)
	if err != nil {
		return nil, fieldErr("workspace_id", "%v", err)
	}
	if err := CheckTargetName(name); err != nil {
		return nil, err
	}
	if existing, err := s.GetTarget(ctx, name); err == nil {
		return nil, fieldErr("name", "workspace already has a compute target %q (kind %s); names are unique across kinds", name, existing.Kind)
	}
	k, err := drivers.Lookup(kind)
	if err != nil {
		return nil, err
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	var secretsJSON json.RawMessage
	if secrets != nil {
		if secretsJSON, err = json.Marshal(secrets); err != nil {
			return nil, err
		}
	}
	w := e.workspace(s)
	rec, keep, err := k.Attach(ctx, w, name, specJSON, secretsJSON)
	if err != nil {
		return nil, err
	}
	rec.Name, rec.Kind = name, kind
	if keep != nil {
		if err := s.PutSecrets(name, keep); err != nil {
			return nil, err
		}
	}
	if err := s.PutTarget(ctx, rec); err != nil {
		_ = s.DeleteTarget(ctx, name)
		return nil, err
	}
	if err := k.Apply(ctx, w, rec); err != nil {
		return nil, err
	}
	return e.ReadTarget(ctx, TargetID(s.UID, name))
}

// UpdateTarget changes a target's settings in place, for kinds that allow it.
func (e *Engine) UpdateTarget(ctx context.Context, id string, spec any) (*Target, error) {
	s, name, err := e.openChild(ctx, id, ParseTargetID)
	if err != nil {
		return nil, err
	}
	t, k, err := e.targetRecord(ctx, s, name, "name")
	if err != nil {
		return nil, err
	}
	u, ok := k.(drivers.Updater)
	if !ok {
		return nil, fmt.Errorf("compute target %q (%s) cannot change in place", name, t.Kind)
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	w := e.workspace(s)
	if t, err = u.Update(ctx, w, t, raw); err != nil {
		return nil, err
	}
	if err := s.PutTarget(ctx, t); err != nil {
		return nil, err
	}
	if err := k.Apply(ctx, w, t); err != nil {
		return nil, err
	}
	return e.ReadTarget(ctx, id)
}

// ReadTarget returns a wrapped ErrNotFound for an unknown target.
func (e *Engine) ReadTarget(ctx context.Context, id string) (*Target, error) {
	s, name, err := e.openChild(ctx, id, ParseTargetID)
	if err != nil {
		return nil, err
	}
	row, err := s.GetTarget(ctx, name)
	if err != nil {
		return nil, err
	}
	return e.describe(ctx, s, row)
}

func (e *Engine) describe(ctx context.Context, s *store.Store, row drivers.Target) (*Target, error) {
	k, err := drivers.Lookup(row.Kind)
	if err != nil {
		return nil, fmt.Errorf("compute target %q: %w", row.Name, err)
	}
	d, err := k.Describe(ctx, e.workspace(s), row)
	if err != nil {
		return nil, err
	}
	return &Target{
		ID: TargetID(s.UID, row.Name), WorkspaceID: s.UID, Name: row.Name, Kind: row.Kind,
		ProvisioningState: d.ProvisioningState, CreatedAt: row.CreatedAt,
		Facts: d.Facts, Address: d.Address, Nodes: d.Nodes,
		Spec: row.Spec, State: row.State,
	}, nil
}

// ReadTargetStatus describes any target by name, with live node counts for
// kinds that have nodes; "local" is the machine running the engine.
func (e *Engine) ReadTargetStatus(ctx context.Context, workspaceID, name string) (*Target, error) {
	s, err := e.open(ctx, workspaceID)
	if err != nil {
		return nil, fieldErr("workspace_id", "%v", err)
	}
	row, _, err := e.targetRecord(ctx, s, name, "name")
	if err != nil {
		return nil, err
	}
	return e.describe(ctx, s, row)
}

// DetachTarget removes a target from the workspace. It refuses while runs are
// active on it unless force, in which case they are canceled first; then the
// kind releases what the target holds (a pool's nodes). Files on remote hosts
// are never deleted.
func (e *Engine) DetachTarget(ctx context.Context, id string, force bool) error {
	return e.detach(ctx, id, force, "force_detach")
}

func (e *Engine) detach(ctx context.Context, id string, force bool, forceAttr string) error {
	s, name, err := e.openChild(ctx, id, ParseTargetID)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	row, err := s.GetTarget(ctx, name)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	ids, err := s.ActiveRunsOn(ctx, name)
	if err != nil {
		return err
	}
	active, err := e.stillActive(ctx, s, ids)
	if err != nil {
		return err
	}
	if len(active) > 0 && !force {
		return fmt.Errorf("compute target %q has %d active run(s) (%s); destroy them first, or set %s = true to cancel them", name, len(active), strings.Join(active, ", "), forceAttr)
	}
	for _, runID := range active {
		if _, err := e.cancel(ctx, s, runID, run.ReasonCanceled); err != nil {
			return fmt.Errorf("canceling run %s before detaching: %w", runID, err)
		}
	}
	if err := e.release(ctx, s, row); err != nil {
		return err
	}
	return s.DeleteTarget(ctx, name)
}

func (e *Engine) release(ctx context.Context, s *store.Store, row drivers.Target) error {
	k, err := drivers.Lookup(row.Kind)
	if err != nil {
		return fmt.Errorf("compute target %q: %w", row.Name, err)
	}
	if err := k.Release(ctx, e.workspace(s), row); err != nil {
		return fmt.Errorf("releasing compute target %s: %w", row.Name, err)
	}
	return nil
}

// TargetSecrets reads a target's stored secrets into v (for import).
func (e *Engine) TargetSecrets(ctx context.Context, id string, v any) error {
	s, name, err := e.openChild(ctx, id, ParseTargetID)
	if err != nil {
		return err
	}
	return s.GetSecrets(name, v)
}

// AttachRemote attaches an SSH host (aml_remote_compute): it connects (verifying
// its host key, or pinning the first one seen), stages the agent, probes the
// host and records it.
func (e *Engine) AttachRemote(ctx context.Context, workspaceID string, spec RemoteSpec, creds Credentials) (*Target, error) {
	return e.AttachTarget(ctx, workspaceID, KindSSH, spec.Name, spec, creds)
}
