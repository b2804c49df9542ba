// Package store is the workspace store: a directory holding a SQLite database
// (pure-Go driver, WAL mode) for workspace metadata, run configurations and run
// records, a content-addressed blob directory and one directory per run.
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver (pure Go, no cgo)
)

// File and directory names inside a workspace.
const (
	DBFile   = "workspace.db"
	BlobsDir = "blobs"
	RunsDir  = "runs"

	// applicationID marks the database as ours ("AML1"), so a foreign SQLite file
	// is reported as such instead of being migrated.
	applicationID = 0x414d4c31
)

var (
	ErrNotFound      = errors.New("not found")
	ErrNotWorkspace  = errors.New("not an aml workspace")
	ErrNewerVersion  = errors.New("workspace store was written by a newer version of the provider")
	ErrAlreadyExists = errors.New("already exists")
)

// Meta is the workspace's own record.
type Meta struct {
	// UID is the workspace's stable id, a random UUID given at creation.
	UID         string
	Name        string
	Description string
	Tags        map[string]string
	CreatedAt   time.Time
}

// Store is one open workspace. It is safe for concurrent use by goroutines and,
// through SQLite locking, by several processes.
type Store struct {
	Dir string
	// UID is the workspace's stable id (Meta.UID).
	UID string
	db  *handle

	shared *sharedState // nil for an embedded workspace
}

// checkHeader refuses a file that is not SQLite, or a SQLite database of
// another application, from its 100-byte header alone. A header without an
// application id is left to the full check when a WAL file exists (the id may
// still be in the WAL after a crash).
func checkHeader(dbPath string) error {
	f, err := os.Open(dbPath)
	if err != nil {
		return err
	}
	defer f.Close()
	var h [100]byte
	n, _ := io.ReadFull(f, h[:])
	if n == 0 {
		return nil // a store being created
	}
	if n < len(h) || string(h[:16]) != "SQLite format 3\x00" {
		return fmt.Errorf("workspace store %s is corrupt or not a SQLite database: %w", dbPath, ErrNotWorkspace)
	}
	switch id := int64(binary.BigEndian.Uint32(h[68:72])); {
	case id == applicationID:
		return nil
	case id == 0:
		if _, err := os.Stat(dbPath + "-wal"); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s is a SQLite database but not an aml workspace store: %w", dbPath, ErrNotWorkspace)
}

func dsn(path string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(15000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	return "file:" + path + "?" + q.Encode()
}

// Create makes a new workspace at dir. The store is built in a temporary sibling
// directory and renamed into place, so a failure never leaves a half-written
// workspace. If dir already holds a workspace with the same name it is opened
// (an apply that lost its state adopts it); a different name is an error.
func Create(ctx context.Context, dir string, meta Meta) (*Store, error) {
	if err := checkDirPath(dir); err != nil {
		return nil, err
	}
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			return adoptExisting(ctx, dir, meta.Name)
		}
		if err := os.Remove(dir); err != nil {
			return nil, err
		}
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("creating parent directory of workspace %s: %w", dir, err)
	}
	tmp := filepath.Join(parent, "."+filepath.Base(dir)+".creating-"+randomHex(4))
	// The database holds values of the configuration: the workspace is the
	// owner's alone (0700, the database and its WAL 0600).
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("creating workspace %s: %w", dir, err)
	}
	defer os.RemoveAll(tmp) // no-op after a successful rename
	if err := initDir(ctx, tmp, meta); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another process created it between our check and the rename.
		if st, serr := os.Stat(dir); serr == nil && st.IsDir() {
			return adoptExisting(ctx, dir, meta.Name)
		}
		return nil, fmt.Errorf("creating workspace %s: %w", dir, err)
	}
	return Open(ctx, dir)
}

func adoptExisting(ctx context.Context, dir, name string) (*Store, error) {
	s, err := Open(ctx, dir)
	if err != nil {
		return nil, err
	}
	m, err := s.Meta(ctx)
	if err != nil {
		s.Close()
		return nil, err
	}
	if m.Name != name {
		s.Close()
		return nil, fmt.Errorf("%s already holds workspace %q, not %q: %w", dir, m.Name, name, ErrAlreadyExists)
	}
	return s, nil
}

func checkDirPath(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("workspace path %q is not absolute", dir)
	}
	// Walk up: no component may be a regular file.
	for p := dir; ; p = filepath.Dir(p) {
		if st, err := os.Stat(p); err == nil {
			if !st.IsDir() {
				return fmt.Errorf("%s is a file, not a directory; choose another storage_path", p)
			}
			return nil
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

func initDir(ctx context.Context, dir string, meta Meta) error {
	for _, d := range []string{BlobsDir, RunsDir} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	// Created first with mode 0600: SQLite gives its -wal and -shm files the
	// database file's mode.
	f, err := os.OpenFile(filepath.Join(dir, DBFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	db, err := sql.Open("sqlite", dsn(filepath.Join(dir, DBFile)))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", applicationID)); err != nil {
		return fmt.Errorf("initialising workspace database: %w", err)
	}
	if err := migrate(ctx, db); err != nil {
		return err
	}
	tags, _ := json.Marshal(nonNilMap(meta.Tags))
	created := meta.CreatedAt
	if created.IsZero() {
		created = time.Now().UTC()
	}
	uid := meta.UID
	if uid == "" {
		uid = NewUID()
	}
	_, err = db.ExecContext(ctx, `INSERT INTO meta(id, uid, name, description, tags, created_at) VALUES (1, ?, ?, ?, ?, ?)`,
		uid, meta.Name, meta.Description, string(tags), created.Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("initialising workspace database: %w", err)
	}
	// Fold the WAL back so the renamed directory holds one self-contained file.
	_, _ = db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
	return nil
}

// Open opens an existing workspace, migrating its schema forward if it is older.
func Open(ctx context.Context, dir string) (*Store, error) {
	st, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("workspace %s: %w", dir, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("workspace path %s is a file, not a directory: %w", dir, ErrNotWorkspace)
	}
	dbPath := filepath.Join(dir, DBFile)
	if _, err := os.Stat(dbPath); err != nil {
		if _, berr := os.Stat(filepath.Join(dir, BackendFile)); berr == nil {
			return openBackendFile(ctx, dir) // the cache of a shared workspace
		}
		return nil, fmt.Errorf("workspace %s has no %s: %w", dir, DBFile, ErrNotFound)
	}
	// Look before writing anything: opening switches the database to WAL
	// mode, which must never happen to someone else's file.
	if err := checkHeader(dbPath); err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", dsn(dbPath))
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Store, error) { db.Close(); return nil, err }
	var appID int64
	if err := db.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return fail(fmt.Errorf("workspace store %s is corrupt or not a SQLite database (%v): %w", dbPath, err, ErrNotWorkspace))
	}
	if appID != applicationID {
		return fail(fmt.Errorf("%s is a SQLite database but not an aml workspace store: %w", dbPath, ErrNotWorkspace))
	}
	if err := migrate(ctx, db); err != nil {
		return fail(fmt.Errorf("workspace store %s: %w", dbPath, err))
	}
	s := &Store{Dir: dir, db: &handle{sql: db, dialect: dialectSQLite}}
	m, err := s.Meta(ctx)
	if err != nil {
		return fail(fmt.Errorf("workspace store %s is corrupt: %w", dbPath, err))
	}
	s.UID = m.UID
	return s, nil
}

// Close releases the database.
func (s *Store) Close() error { return s.db.Close() }

// BlobsPath is the root of the content-addressed blob store.
func (s *Store) BlobsPath() string { return filepath.Join(s.Dir, BlobsDir) }

// RunDir is where a run's files live.
func (s *Store) RunDir(runID string) string { return filepath.Join(s.Dir, RunsDir, runID) }

// Meta reads the workspace record.
func (s *Store) Meta(ctx context.Context) (Meta, error) {
	var m Meta
	var tags, created string
	err := s.db.QueryRowContext(ctx, `SELECT uid, name, description, tags, created_at FROM meta WHERE id = 1`).
		Scan(&m.UID, &m.Name, &m.Description, &tags, &created)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal([]byte(tags), &m.Tags); err != nil {
		return m, fmt.Errorf("workspace tags: %w", err)
	}
	m.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	return m, nil
}

// UpdateMeta changes the mutable workspace fields.
func (s *Store) UpdateMeta(ctx context.Context, description string, tags map[string]string) error {
	t, _ := json.Marshal(nonNilMap(tags))
	_, err := s.db.ExecContext(ctx, `UPDATE meta SET description = ?, tags = ? WHERE id = 1`, description, string(t))
	return err
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// UIDPattern matches a workspace id (a UUID, lower case).
var UIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// NewUID returns a random (version 4) UUID.
func NewUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// IsNotFoundErr reports whether err wraps ErrNotFound.
func IsNotFoundErr(err error) bool { return errors.Is(err, ErrNotFound) }
