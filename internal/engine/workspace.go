package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// WorkspaceNamePattern is Azure ML's rule for workspace names.
var WorkspaceNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$`)

// DefaultWorkspaceRoot is where workspaces live when storage_path is not set,
// relative to the working directory.
const DefaultWorkspaceRoot = ".aml/workspaces"

// WorkspaceSpec is what a user declares.
type WorkspaceSpec struct {
	Name string
	// StoragePath is where the workspace lives, as the user wrote it: relative
	// paths are resolved against the working directory each time. Default:
	// DefaultStoragePath(Name).
	StoragePath string
	Description string
	Tags        map[string]string
	// Backend is BackendEmbedded (default) or BackendShared.
	Backend string
}

// Workspace is a workspace as stored.
type Workspace struct {
	// ID is the workspace's stable id (a UUID given at creation); it names no
	// machine path, so a moved checkout or another machine sees the same id.
	ID string
	// Dir is the workspace directory on this machine; StoragePath is how the
	// configuration names it (relative to the working directory, or absolute).
	Dir         string
	StoragePath string
	Name        string
	Description string
	Tags        map[string]string
	CreatedAt   time.Time
	RunCount    int
	// Backend is BackendEmbedded or BackendShared.
	Backend string
}

// DefaultStoragePath is where a workspace lives when storage_path is not set:
// relative, so it means the same in every checkout.
func DefaultStoragePath(name string) string { return DefaultWorkspaceRoot + "/" + name }

// WorkspacePath resolves where a workspace lives on this machine.
func (e *Engine) WorkspacePath(name, storagePath string) string {
	if storagePath == "" {
		storagePath = DefaultStoragePath(name)
	}
	return e.abs(storagePath)
}

// SameStorage reports whether two spellings of storage_path ("wsdir",
// "./wsdir/", an absolute path) name the same directory on this machine.
func (e *Engine) SameStorage(a, b string) bool { return e.abs(a) == e.abs(b) }

// CreateWorkspace creates (or adopts an existing same-named) workspace.
func (e *Engine) CreateWorkspace(ctx context.Context, spec WorkspaceSpec) (*Workspace, error) {
	if !WorkspaceNamePattern.MatchString(spec.Name) {
		return nil, fieldErr("name", "%q is not a valid workspace name: use 3 to 33 letters, digits, '-' or '_', starting with a letter or digit", spec.Name)
	}
	switch spec.Backend {
	case BackendShared:
		return e.createShared(ctx, spec)
	case BackendEmbedded, "":
	default:
		return nil, fieldErr("backend", "%q is not a workspace backend; valid values are %s", spec.Backend, strings.Join(Backends, ", "))
	}
	dir := e.WorkspacePath(spec.Name, spec.StoragePath)
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return nil, fieldErr("storage_path", "%s is a file, not a directory; choose a directory for the workspace", dir)
	}
	s, err := store.Create(ctx, dir, store.Meta{Name: spec.Name, Description: spec.Description, Tags: spec.Tags})
	if err != nil {
		return nil, fieldErr("storage_path", "cannot create workspace at %s: %v", dir, err)
	}
	s.Close()
	s, err = e.openDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	if err := s.UpdateMeta(ctx, spec.Description, spec.Tags); err != nil {
		return nil, err
	}
	return e.located(ctx, s, storageOrDefault(spec))
}

func storageOrDefault(spec WorkspaceSpec) string {
	if spec.StoragePath != "" {
		return spec.StoragePath
	}
	return DefaultStoragePath(spec.Name)
}

// LocateWorkspace reads the workspace a configuration names (name and
// storage_path, as written): a wrapped ErrNotFound when there is none, or when
// id is set and the directory now holds another workspace.
func (e *Engine) LocateWorkspace(ctx context.Context, id, name, storagePath string) (*Workspace, error) {
	spec := WorkspaceSpec{Name: name, StoragePath: storagePath}
	s, err := e.openDir(ctx, e.WorkspacePath(name, storagePath))
	if err != nil {
		return nil, err
	}
	if id != "" && !filepath.IsAbs(id) && s.UID != id {
		return nil, fmt.Errorf("%s now holds workspace %s, not %s: %w", s.Dir, s.UID, id, ErrNotFound)
	}
	return e.located(ctx, s, storageOrDefault(spec))
}

// located remembers where a workspace is, for this process and, through a
// pointer file under the working directory's .aml/, for the next one.
func (e *Engine) located(ctx context.Context, s *store.Store, storagePath string) (*Workspace, error) {
	e.remember(s.UID, s.Dir)
	e.writePointer(s.UID, storagePath)
	ws, err := e.readWorkspace(ctx, s)
	if err != nil {
		return nil, err
	}
	ws.StoragePath = storagePath
	return ws, nil
}

// ReadWorkspace reads a workspace by id (see Engine.open for how an id is
// found); a wrapped ErrNotFound when it is not on this machine.
func (e *Engine) ReadWorkspace(ctx context.Context, id string) (*Workspace, error) {
	if !IsWorkspaceID(id) && WorkspaceNamePattern.MatchString(id) {
		return e.LocateWorkspace(ctx, "", id, "") // a name: the default location
	}
	s, err := e.open(ctx, id)
	if err != nil {
		return nil, err
	}
	ws, err := e.readWorkspace(ctx, s)
	if err != nil {
		return nil, err
	}
	if ws.Backend == BackendEmbedded {
		ws.StoragePath = e.storagePathOf(s)
	}
	return ws, nil
}

func (e *Engine) readWorkspace(ctx context.Context, s *store.Store) (*Workspace, error) {
	m, err := s.Meta(ctx)
	if err != nil {
		return nil, err
	}
	n, err := s.CountRuns(ctx)
	if err != nil {
		return nil, err
	}
	backend := BackendEmbedded
	if s.SharedID() != "" {
		backend = BackendShared
	}
	return &Workspace{ID: s.UID, Dir: s.Dir, Name: m.Name, Description: m.Description, Tags: m.Tags, CreatedAt: m.CreatedAt, RunCount: n, Backend: backend}, nil
}

// UpdateWorkspace changes description and tags.
func (e *Engine) UpdateWorkspace(ctx context.Context, id, description string, tags map[string]string) (*Workspace, error) {
	s, err := e.open(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.UpdateMeta(ctx, description, tags); err != nil {
		return nil, err
	}
	return e.ReadWorkspace(ctx, id)
}

// Deletion policies of a workspace (aml_workspace.deletion_policy), after
// google_project's: what destroying it does to its directory and run history.
const (
	// DeleteKeepHistory deletes an empty workspace and keeps one that holds
	// run records on disk (the next apply with the same name and place adopts
	// it again): destroy succeeds and no history is lost.
	DeleteKeepHistory = "KEEP_HISTORY"
	// DeleteAll deletes the workspace with its history.
	DeleteAll = "DELETE"
	// DeletePrevent refuses while the workspace holds run records.
	DeletePrevent = "PREVENT"
)

// DeletionPolicies lists the valid deletion policies, the default first.
var DeletionPolicies = []string{DeleteKeepHistory, DeleteAll, DeletePrevent}

// DestroyWorkspace applies a deletion policy: it deletes the workspace, or
// keeps its directory with its run history and only stops what works in it
// (pool node agents), or refuses. It returns whether the directory was kept.
func (e *Engine) DestroyWorkspace(ctx context.Context, id, policy string) (kept bool, err error) {
	switch policy {
	case DeleteAll:
		return false, e.DeleteWorkspace(ctx, id, true)
	case DeletePrevent:
		return false, e.DeleteWorkspace(ctx, id, false)
	case DeleteKeepHistory, "":
	default:
		return false, fieldErr("deletion_policy", "%q is not a deletion policy; valid values are %s", policy, strings.Join(DeletionPolicies, ", "))
	}
	s, err := e.open(ctx, id)
	if IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	n, err := s.CountRuns(ctx)
	if err != nil {
		return false, err
	}
	if n == 0 {
		return false, e.DeleteWorkspace(ctx, id, false)
	}
	if err := e.releaseTargets(ctx, s); err != nil {
		return false, err
	}
	e.forget(s)
	return true, nil
}

// releaseTargets has every target release what it holds (a pool stops its
// node agents): nothing may keep working in a workspace Terraform let go of.
func (e *Engine) releaseTargets(ctx context.Context, s *store.Store) error {
	names, err := s.TargetNames(ctx)
	if err != nil {
		return err
	}
	for _, name := range names {
		row, err := s.GetTarget(ctx, name)
		if err != nil {
			return err
		}
		if err := e.release(ctx, s, row); err != nil {
			return err
		}
	}
	return nil
}

// DeleteWorkspace removes a workspace directory. Without force it refuses while
// the workspace holds run history; with force it still refuses while runs are active.
func (e *Engine) DeleteWorkspace(ctx context.Context, id string, force bool) error {
	s, err := e.open(ctx, id)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	n, err := s.CountRuns(ctx)
	if err != nil {
		return err
	}
	if n > 0 && !force {
		return fmt.Errorf("workspace %s holds %d run record(s) and its deletion_policy is %q, so it is kept; set deletion_policy = %q (and apply) to delete it with its history, or %q to keep the history on disk and let Terraform forget the workspace", s.Dir, n, DeletePrevent, DeleteAll, DeleteKeepHistory)
	}
	ids, err := s.ActiveRunIDs(ctx)
	if err != nil {
		return err
	}
	active, err := e.stillActive(ctx, s, ids)
	if err != nil {
		return err
	}
	if len(active) > 0 {
		return fmt.Errorf("workspace %s has %d active run(s) (%s); destroy or cancel them first", s.Dir, len(active), strings.Join(active, ", "))
	}
	if err := e.releaseTargets(ctx, s); err != nil {
		return err
	}
	if s.SharedID() != "" {
		return e.deleteShared(ctx, s)
	}
	dir := s.Dir
	e.forget(s)
	e.removePointer(s.UID)
	// Rename first so a crash mid-removal never leaves a half-deleted workspace
	// that still looks valid.
	trash := filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".deleting-"+time.Now().Format("20060102150405.000000000"))
	if err := os.Rename(dir, trash); err != nil {
		return fmt.Errorf("deleting workspace %s: %w", dir, err)
	}
	return os.RemoveAll(trash)
}

// IsWorkspaceID reports whether s has the form of a workspace id (a UUID).
func IsWorkspaceID(s string) bool { return store.UIDPattern.MatchString(s) }

// UpgradeState rewrites the attributes of a resource's state written before
// workspace ids (schema version 0), whose ids began with the workspace's absolute directory: id,
// workspace_id and run_configuration_id name the workspace by its id instead,
// and a storage_path that was the default directory becomes the default
// relative path. A workspace that is not on this machine is left as it was
// (its old ids still open it where it was).
func (e *Engine) UpgradeState(ctx context.Context, attrs map[string]any) {
	for _, key := range []string{"id", "workspace_id", "run_configuration_id"} {
		v, ok := attrs[key].(string)
		if !ok || !filepath.IsAbs(v) {
			continue
		}
		if s, err := e.openDir(ctx, v); err == nil { // a workspace id
			attrs[key] = s.UID
			continue
		}
		for _, sep := range []string{runSep, targetSep, runConfigSep} {
			if i := strings.LastIndex(v, sep); i > 0 {
				if s, err := e.openDir(ctx, v[:i]); err == nil {
					attrs[key] = s.UID + v[i:]
				}
				break
			}
		}
	}
	name, _ := attrs["name"].(string)
	if sp, ok := attrs["storage_path"].(string); ok && name != "" && filepath.IsAbs(sp) && e.SameStorage(sp, DefaultStoragePath(name)) {
		attrs["storage_path"] = DefaultStoragePath(name)
	}
}
