package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// What a shared workspace adds to a run's life: the snapshot's blobs go to
// the object store before the run is recorded, its outputs and logs go there
// before the record says it ended, and another machine's refresh copies them
// into its own cache. On an embedded workspace each step is a no-op.

// manifestBlobs lists the distinct blobs of a manifest's regular files.
func manifestBlobs(m *snapshot.Manifest) []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range m.Entries {
		if e.Mode == snapshot.ModeSymlink || seen[e.SHA256] {
			continue
		}
		seen[e.SHA256] = true
		out = append(out, e.SHA256)
	}
	return out
}

// pushSnapshot uploads the blobs the object store lacks: the files' and the
// manifest's own (extra).
func pushSnapshot(ctx context.Context, s *store.Store, m *snapshot.Manifest, extra ...string) error {
	if err := s.PushBlobs(ctx, append(manifestBlobs(m), extra...)); err != nil {
		return fmt.Errorf("storing snapshot: %w", err)
	}
	return nil
}

// pushCollected uploads a collected run's outputs and logs. It runs before the
// record is updated: a record never says a run ended with results the bucket
// does not have (the next refresh collects and uploads again).
func pushCollected(ctx context.Context, s *store.Store, runID string, col drivers.Collected) error {
	if s.Objects() == nil {
		return nil
	}
	logs := ""
	if col.LogPath != "" {
		logs = filepath.Dir(col.LogPath)
	}
	if err := s.PushRunFiles(ctx, runID, col.OutputsPath, logs); err != nil {
		return fmt.Errorf("run %s ended, but its outputs and logs could not be stored in %s (the run record is unchanged; the next refresh retries): %w", runID, s.Objects(), err)
	}
	return nil
}

// localCopy gives a finished run of a shared workspace its files in this
// machine's cache when they are not there (another machine ran it, or the
// cache was lost), so outputs_path is usable wherever Terraform runs.
func localCopy(ctx context.Context, s *store.Store, rec *run.Record) error {
	if s.Objects() == nil || !rec.Status.Terminal() || rec.OutputsPath == "" || filepath.IsAbs(rec.OutputsPath) {
		return nil
	}
	outputs := fromWorkspace(s.Dir, rec.OutputsPath)
	logPath := fromWorkspace(s.Dir, rec.LogPath)
	_, oerr := os.Stat(outputs)
	_, lerr := os.Stat(logPath)
	if !errors.Is(oerr, os.ErrNotExist) && (rec.LogPath == "" || !errors.Is(lerr, os.ErrNotExist)) {
		return nil
	}
	if _, err := s.FetchRunFiles(ctx, rec.ID); err != nil {
		return fmt.Errorf("copying run %s files from %s: %w", rec.ID, s.Objects(), err)
	}
	// A run without outputs still has its directory.
	return os.MkdirAll(outputs, 0o755)
}

// errNoSharedBackend says what is missing for a shared workspace.
func errNoSharedBackend(ref string) error {
	return fieldErr("backend", "workspace %q is shared, and the provider has no shared_backend block: configure shared_backend (PostgreSQL connection and bucket) in the provider \"aml\" block", ref)
}

// openShared returns the store of a shared workspace by its UUID or name,
// opened once per engine (cached by its cache directory, as embedded stores
// are by theirs, and remembered by UUID).
func (e *Engine) openShared(ctx context.Context, ref string) (*store.Store, error) {
	if e.opts.Shared == nil {
		return nil, errNoSharedBackend(ref)
	}
	cfg, err := e.opts.Shared.config()
	if err != nil {
		return nil, err
	}
	cfg.CacheRoot = e.abs(cfg.CacheRoot)
	if IsWorkspaceID(ref) {
		if s, err := e.openDir(ctx, filepath.Join(cfg.CacheRoot, ref)); err == nil && s.SharedID() == ref {
			return s, nil
		}
	}
	s, err := store.OpenShared(ctx, cfg, ref)
	if err != nil {
		return nil, err
	}
	return e.keepShared(s), nil
}

// keepShared caches an opened shared store (a racing open of the same
// workspace keeps the first).
func (e *Engine) keepShared(s *store.Store) *store.Store {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.where[s.UID] = s.Dir
	if old, ok := e.stores[s.Dir]; ok {
		s.Close()
		return old
	}
	e.stores[s.Dir] = s
	return s
}

// createShared creates (or adopts, by name) a shared workspace.
func (e *Engine) createShared(ctx context.Context, spec WorkspaceSpec) (*Workspace, error) {
	if e.opts.Shared == nil {
		return nil, errNoSharedBackend(spec.Name)
	}
	if spec.StoragePath != "" {
		return nil, fieldErr("storage_path", "%q is the directory of an embedded workspace; a shared workspace lives in the provider's shared_backend (each machine's cache is shared_backend.cache_dir): remove storage_path or set backend = %q", spec.StoragePath, BackendEmbedded)
	}
	cfg, err := e.opts.Shared.config()
	if err != nil {
		return nil, err
	}
	cfg.CacheRoot = e.abs(cfg.CacheRoot)
	s, err := store.CreateShared(ctx, cfg, store.Meta{Name: spec.Name, Description: spec.Description, Tags: spec.Tags})
	if err != nil {
		return nil, err
	}
	s = e.keepShared(s)
	if err := s.UpdateMeta(ctx, spec.Description, spec.Tags); err != nil {
		return nil, err
	}
	return e.readWorkspace(ctx, s)
}

// LocateSharedWorkspace reads the shared workspace of that name: a wrapped
// ErrNotFound when there is none, or when id is set and the name now belongs
// to another workspace.
func (e *Engine) LocateSharedWorkspace(ctx context.Context, id, name string) (*Workspace, error) {
	s, err := e.openShared(ctx, name)
	if err != nil {
		return nil, err
	}
	if id != "" && s.UID != id {
		return nil, fmt.Errorf("shared workspace %q is now %s, not %s: %w", name, s.UID, id, ErrNotFound)
	}
	return e.readWorkspace(ctx, s)
}

// deleteShared removes a shared workspace (records and files) and this
// machine's cache of it.
func (e *Engine) deleteShared(ctx context.Context, s *store.Store) error {
	id, dir := s.UID, s.Dir
	cfg, err := e.opts.Shared.config()
	if err != nil {
		return err
	}
	cfg.CacheRoot = e.abs(cfg.CacheRoot)
	e.forget(s)
	if err := store.DeleteShared(ctx, cfg, id); err != nil {
		return fmt.Errorf("deleting shared workspace %s: %w", id, err)
	}
	return os.RemoveAll(dir)
}

func thisHost() string {
	h, _ := os.Hostname()
	return h
}

// elsewhere names the machine that started an active run of a shared
// workspace when it is not this one ("" otherwise): only that machine can
// observe the run's processes.
func elsewhere(s *store.Store, rec *run.Record) string {
	if s.SharedID() == "" || rec.Host == "" || rec.Host == thisHost() {
		return ""
	}
	return rec.Host
}

// waitRecorded polls a run's record until it is terminal (another machine
// records it) or ctx ends.
func waitRecorded(ctx context.Context, s *store.Store, id string) (*run.Record, error) {
	for {
		rec, err := s.GetRun(ctx, id)
		if err != nil || rec.Status.Terminal() {
			return rec, err
		}
		select {
		case <-ctx.Done():
			return rec, fmt.Errorf("waiting for run %s, active on machine %q: %w", id, rec.Host, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
