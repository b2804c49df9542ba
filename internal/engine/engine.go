// Package engine is the domain of terraform-provider-aml: workspaces, run
// configurations, snapshots and runs on compute targets. It imports nothing from
// terraform-plugin-*; the provider is a thin layer over it, and it is usable and
// tested without Terraform.
package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// ErrNotFound is returned (wrapped) when a workspace, run configuration or run
// does not exist.
var ErrNotFound = store.ErrNotFound

// FieldError names the configuration attribute at fault, so the provider can
// attach the diagnostic to it. It is the engine's one such type.
type FieldError = field.Error

func fieldErr(attr, format string, args ...any) error { return field.Errorf(attr, format, args...) }

// Options configure an Engine.
type Options struct {
	// AgentCommand starts this program's agent subcommands, e.g. [exe, "agent"].
	AgentCommand []string
	// WorkDir resolves relative paths; default: the current directory.
	WorkDir string
	// SnapshotLimits bound every snapshot (zero fields: Azure's 300 MB / 2000 files).
	SnapshotLimits snapshot.Limits
	// StatCacheDir keeps plan-time hashing fast; default: the user cache directory.
	StatCacheDir string
	// EnvCacheMaxBytes bounds each workspace's environment cache (LRU eviction of
	// environments no run is using); 0 means unbounded.
	EnvCacheMaxBytes int64
	// CollectMaxBytes bounds what a remote run's outputs and logs may bring
	// back (default 2 GiB); what is over stays on the host, and the run says so.
	CollectMaxBytes int64
	// CancelGrace is the time between SIGTERM and SIGKILL; default 10s.
	CancelGrace time.Duration
	// Shared is where workspaces with the shared backend live (nil: none).
	Shared *SharedBackend
}

// Engine is goroutine-safe: Terraform calls resources in parallel in one process.
type Engine struct {
	opts  Options
	owner string

	mu     sync.Mutex
	stores map[string]*store.Store // by directory
	where  map[string]string       // workspace id -> directory, as last found
	pool   *remote.Pool            // SSH connections, one per host; created on first use

	// planned are the targets this process has planned to create (see
	// NotePlannedTarget); planEnv caches plan-time environment checks.
	planned map[string]bool
	planEnv map[string]error

	// snapshots answers repeated hashes of an unchanged source directory in
	// this process from memory (snapshot.Memo: inotify says when it changed).
	snapshots snapshot.Memo
}

// New returns an Engine with defaults filled in.
func New(opts Options) (*Engine, error) {
	if opts.WorkDir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		opts.WorkDir = wd
	}
	if opts.StatCacheDir == "" {
		if d, err := os.UserCacheDir(); err == nil {
			opts.StatCacheDir = filepath.Join(d, "terraform-provider-aml", "statcache")
		}
	}
	if opts.CancelGrace == 0 {
		opts.CancelGrace = 10 * time.Second
	}
	if len(opts.AgentCommand) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		opts.AgentCommand = []string{exe, "agent"}
	}
	host, _ := os.Hostname()
	return &Engine{
		opts:    opts,
		owner:   fmt.Sprintf("%s:%d:%d", host, os.Getpid(), supervise.SelfStartTicks()),
		stores:  map[string]*store.Store{},
		where:   map[string]string{},
		planned: map[string]bool{},
		planEnv: map[string]error{},
	}, nil
}

// Close closes every open workspace store.
func (e *Engine) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, s := range e.stores {
		s.Close()
		delete(e.stores, k)
	}
	if e.pool != nil {
		e.pool.Close()
		e.pool = nil
	}
}

// abs resolves p against the engine's working directory.
func (e *Engine) abs(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(e.opts.WorkDir, p)
}

// open returns the store of a workspace id. An id is the workspace's UUID; it
// is found, in order, where this process last saw it, through its pointer file
// (.aml/workspaces/.ids/<uuid>, written when the workspace is created or read,
// holding its storage_path as configured) and among the workspaces under the
// default root. An absolute directory (the ids of state written before workspace ids,
// and the engine's own callers) opens that directory.
func (e *Engine) open(ctx context.Context, id string) (*store.Store, error) {
	if filepath.IsAbs(id) {
		return e.openDir(ctx, id)
	}
	if !store.UIDPattern.MatchString(id) {
		return nil, fmt.Errorf("workspace id %q is not a workspace id: use the id attribute of aml_workspace, a UUID such as 0f8fad5b-d9cb-469f-a165-70867728950e", id)
	}
	e.mu.Lock()
	dir, ok := e.where[id]
	e.mu.Unlock()
	if ok {
		// Where this process found it last: no pointer read, no scan (a
		// run's create opens its workspace a dozen times).
		if s, err := e.openDir(ctx, dir); err == nil && s.UID == id {
			return s, nil
		}
	}
	var looked []string
	if p, err := e.readPointer(id); err == nil {
		looked = append(looked, e.abs(p))
	}
	root := e.abs(DefaultWorkspaceRoot)
	if entries, err := os.ReadDir(root); err == nil {
		for _, de := range entries {
			if de.IsDir() && !strings.HasPrefix(de.Name(), ".") {
				looked = append(looked, filepath.Join(root, de.Name()))
			}
		}
	}
	for _, dir := range looked {
		s, err := e.openDir(ctx, dir)
		if err == nil && s.UID == id {
			e.remember(id, s.Dir)
			return s, nil
		}
	}
	if e.opts.Shared != nil {
		// Not on this machine: a workspace of the shared backend.
		return e.openShared(ctx, id)
	}
	return nil, fmt.Errorf("workspace %s is not on this machine (looked for it through %s and under %s); an embedded workspace lives on the machine that created it: %w",
		id, filepath.Join(root, pointersDir, id), root, ErrNotFound)
}

// openDir returns the cached store of the workspace directory dir.
func (e *Engine) openDir(ctx context.Context, dir string) (*store.Store, error) {
	dir = filepath.Clean(dir)
	e.mu.Lock()
	defer e.mu.Unlock()
	if s, ok := e.stores[dir]; ok {
		return s, nil
	}
	s, err := store.Open(ctx, dir)
	if err != nil {
		return nil, err
	}
	e.stores[dir] = s
	return s, nil
}

// pointersDir holds one file per workspace id under the default root, naming
// the workspace's storage_path as configured (relative paths stay relative).
const pointersDir = ".ids"

func (e *Engine) remember(id, dir string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.where[id] = dir
}

func (e *Engine) pointerPath(id string) string {
	return filepath.Join(e.abs(DefaultWorkspaceRoot), pointersDir, id)
}

func (e *Engine) readPointer(id string) (string, error) {
	b, err := os.ReadFile(e.pointerPath(id))
	if err != nil || len(b) > 4096 {
		return "", fmt.Errorf("no pointer for workspace %s", id)
	}
	return strings.TrimSpace(string(b)), nil
}

// writePointer records where a workspace is for the next process. It is a
// hint: failing to write it costs only a scan.
func (e *Engine) writePointer(id, storagePath string) {
	if old, err := e.readPointer(id); err == nil && old == storagePath {
		return
	}
	p := e.pointerPath(id)
	if os.MkdirAll(filepath.Dir(p), 0o755) != nil {
		return
	}
	tmp := p + ".tmp-" + strconv.Itoa(os.Getpid())
	if os.WriteFile(tmp, []byte(storagePath+"\n"), 0o644) == nil {
		_ = os.Rename(tmp, p)
	}
	_ = os.Remove(tmp)
}

func (e *Engine) removePointer(id string) { _ = os.Remove(e.pointerPath(id)) }

// storagePathOf is the storage_path a workspace was last configured with: its
// pointer, else its directory relative to the working directory when inside it.
func (e *Engine) storagePathOf(s *store.Store) string {
	if p, err := e.readPointer(s.UID); err == nil && e.abs(p) == s.Dir {
		return p
	}
	if rel, err := filepath.Rel(e.opts.WorkDir, s.Dir); err == nil && !strings.HasPrefix(rel, "..") {
		return filepath.ToSlash(rel)
	}
	return s.Dir
}

// cleanID is a workspace id in its one spelling.
func cleanID(id string) string {
	if filepath.IsAbs(id) {
		return filepath.Clean(id)
	}
	return id
}

// openChild opens the workspace of a child id (run, target, ...) and returns
// the child's name.
func (e *Engine) openChild(ctx context.Context, id string, parse func(string) (string, string, error)) (*store.Store, string, error) {
	wsID, name, err := parse(id)
	if err != nil {
		return nil, "", err
	}
	s, err := e.open(ctx, wsID)
	return s, name, err
}

func (e *Engine) forget(s *store.Store) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stores[s.Dir] == s {
		s.Close()
		delete(e.stores, s.Dir)
	}
	delete(e.where, s.UID)
}

// ownerAlive reports whether an owner string names a live provider process.
// Owners on other hosts are assumed alive: we cannot check them.
func ownerAlive(owner string) bool {
	parts := strings.Split(owner, ":")
	if len(parts) != 3 {
		return false
	}
	host, _ := os.Hostname()
	if parts[0] != host {
		return true
	}
	pid, err1 := strconv.Atoi(parts[1])
	ticks, err2 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	return supervise.ProcessAlive(pid, ticks)
}

// IsNotFound reports whether err means the object does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
