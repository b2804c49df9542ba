package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/openaml/terraform-provider-aml/internal/engine/store/objstore"
)

// Shared says where a shared workspace lives: its records in PostgreSQL, its
// files in an object store, and this machine's cache of both.
//
// Layout in PostgreSQL: one table aml.workspaces (uuid, name, schema_name,
// created_at) lists the workspaces of the database, so several share one
// database; each workspace's tables (the same schema as the embedded store's,
// plus schema_version and target_secrets) live in its own PostgreSQL schema,
// ws_<uuid hex>. A connection of a workspace sets search_path to that schema,
// so every query of the store runs unchanged on either backend.
type Shared struct {
	// Postgres is a libpq connection string (postgres:// URL or key=value
	// pairs). What it leaves out comes from the PG* environment variables and
	// ~/.pgpass, as with psql.
	Postgres string
	// CacheRoot holds this machine's cache of shared workspaces:
	// <CacheRoot>/<uuid>/ with blobs/, runs/, envs/, secrets/. Any of it may be
	// lost at any time; what matters is in PostgreSQL and the object store.
	CacheRoot string
	// Objects is the object store of the workspace's files. Nil keeps files in
	// the local cache only (records-only uses, such as the store's tests),
	// unless S3 names a bucket, which is then used.
	Objects objstore.Store
	S3      objstore.S3Config
	// SecretsKey, when set, encrypts SSH credentials into the database so
	// another machine can use them; without it they stay in this machine's
	// cache only. It is never stored anywhere.
	SecretsKey string
}

type sharedState struct {
	cfg    Shared
	uuid   string
	schema string
	where  string // "PostgreSQL at host:port/db" for errors
}

// Schema of the registry of workspaces (created on first use, never migrated
// in place: a change would be a new table).
const registryDDL = `CREATE SCHEMA IF NOT EXISTS aml;
CREATE TABLE IF NOT EXISTS aml.workspaces (
	uuid        TEXT COLLATE "C" PRIMARY KEY,
	name        TEXT COLLATE "C" NOT NULL UNIQUE,
	schema_name TEXT COLLATE "C" NOT NULL UNIQUE,
	created_at  TEXT COLLATE "C" NOT NULL
)`

// registryLock serializes creating the registry and workspaces.
var registryLock = lockKey("aml:registry")

func lockKey(s string) int64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return int64(h.Sum64())
}

// pgWhere names a server without its credentials, for errors.
func pgWhere(cfg *pgx.ConnConfig) string {
	return fmt.Sprintf("PostgreSQL at %s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
}

// openPostgres opens a pool; searchPath "" leaves the server's default.
func openPostgres(ctx context.Context, conn, searchPath string) (*sql.DB, string, error) {
	cfg, err := pgx.ParseConfig(conn)
	if err != nil {
		// pgx's parse errors redact the password; say no more than that.
		return nil, "PostgreSQL", fmt.Errorf("PostgreSQL connection string: %s", redactParseError(err))
	}
	if searchPath != "" {
		cfg.RuntimeParams["search_path"] = searchPath
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	where := pgWhere(cfg)
	db := sql.OpenDB(namedConnector{Connector: stdlib.GetConnector(*cfg), where: where})
	db.SetMaxOpenConns(8)
	db.SetConnMaxIdleTime(time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		if !strings.HasPrefix(err.Error(), where) {
			err = fmt.Errorf("%s: %w", where, pgError(err))
		}
		return nil, where, err
	}
	return db, where, nil
}

// namedConnector puts the server's name (never its credentials) in front of
// every connection error, so "connection refused" says which server refused:
// the pool reconnects under any query after the server went away.
type namedConnector struct {
	driver.Connector
	where string
}

func (c namedConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.where, err)
	}
	return conn, nil
}

var pgPasswordRE = regexp.MustCompile(`(?i)(password=)\S+|(://[^:/@]*:)[^@]*@`)

// redactParseError hides a password a malformed connection string may carry
// (pgx redacts it already; this keeps it so if that changes).
func redactParseError(err error) string {
	return pgPasswordRE.ReplaceAllString(err.Error(), "${1}${2}xxxxx")
}

// pgError shortens a server's error to what helps (a wrapped one keeps its
// context, such as the server's name); pgx never puts the password in its
// errors.
func pgError(err error) error {
	if pe, ok := err.(*pgconn.PgError); ok {
		return fmt.Errorf("%s (SQLSTATE %s)", pe.Message, pe.Code)
	}
	return err
}

// CreateShared creates a workspace named meta.Name in the shared backend, or
// opens it when the database already holds a workspace of that name (an apply
// that lost its state adopts it, as the embedded store does).
func CreateShared(ctx context.Context, sh Shared, meta Meta) (*Store, error) {
	if meta.Name == "" {
		return nil, fmt.Errorf("workspace name is empty")
	}
	root, where, err := openPostgres(ctx, sh.Postgres, "")
	if err != nil {
		return nil, err
	}
	defer root.Close()
	id, err := createRegistered(ctx, root, meta)
	if err != nil {
		return nil, fmt.Errorf("%s: creating workspace %q: %w", where, meta.Name, pgError(err))
	}
	return OpenShared(ctx, sh, id)
}

// createRegistered registers and lays out a new workspace in one transaction
// (PostgreSQL's DDL is transactional: a failure leaves nothing), or returns the
// id of the existing one of that name.
func createRegistered(ctx context.Context, root *sql.DB, meta Meta) (string, error) {
	tx, err := root.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, registryLock); err != nil {
		return "", err
	}
	if _, err := tx.ExecContext(ctx, registryDDL); err != nil {
		return "", err
	}
	var id string
	err = tx.QueryRowContext(ctx, `SELECT uuid FROM aml.workspaces WHERE name = $1`, meta.Name).Scan(&id)
	if err == nil {
		return id, tx.Commit()
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", err
	}
	id = meta.UID
	if id == "" {
		id = NewUID()
	}
	meta.UID = id
	schema := schemaName(id)
	created := meta.CreatedAt
	if created.IsZero() {
		created = time.Now().UTC()
	}
	stmts := []struct {
		q    string
		args []any
	}{
		{`CREATE SCHEMA ` + schema, nil},
		{`SET LOCAL search_path TO ` + schema, nil},
		{`INSERT INTO aml.workspaces(uuid, name, schema_name, created_at) VALUES ($1, $2, $3, $4)`, []any{id, meta.Name, schema, ts(created)}},
	}
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s.q, s.args...); err != nil {
			return "", err
		}
	}
	if err := migratePostgres(ctx, tx); err != nil {
		return "", err
	}
	if err := insertMeta(ctx, &txExec{tx: tx}, meta, created); err != nil {
		return "", err
	}
	return id, tx.Commit()
}

// txExec runs the store's `?` statements on a raw PostgreSQL transaction.
type txExec struct{ tx *sql.Tx }

func (t *txExec) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, rebindDollar(q), args...)
}

func schemaName(id string) string { return "ws_" + strings.ReplaceAll(id, "-", "") }

// OpenShared opens a workspace of the shared backend by its UUID or its name,
// migrating its schema forward if it is older.
func OpenShared(ctx context.Context, sh Shared, ref string) (*Store, error) {
	if sh.CacheRoot == "" || !filepath.IsAbs(sh.CacheRoot) {
		return nil, fmt.Errorf("local cache directory %q of the shared workspace is not an absolute path", sh.CacheRoot)
	}
	if sh.Objects == nil && sh.S3.Bucket != "" {
		obj, err := objstore.NewS3(ctx, sh.S3)
		if err != nil {
			return nil, err
		}
		sh.Objects = obj
	}
	root, where, err := openPostgres(ctx, sh.Postgres, "")
	if err != nil {
		return nil, err
	}
	var id, schema string
	q := `SELECT uuid, schema_name FROM aml.workspaces WHERE name = $1`
	if UIDPattern.MatchString(ref) {
		q = `SELECT uuid, schema_name FROM aml.workspaces WHERE uuid = $1`
	}
	err = root.QueryRowContext(ctx, q, ref).Scan(&id, &schema)
	root.Close()
	var pe *pgconn.PgError
	switch {
	case errors.Is(err, sql.ErrNoRows), errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000"):
		return nil, fmt.Errorf("%s has no workspace %q: %w", where, ref, ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", where, pgError(err))
	}
	pool, _, err := openPostgres(ctx, sh.Postgres, schema)
	if err != nil {
		return nil, err
	}
	h := &handle{sql: pool, dialect: dialectPostgres, lockKey: lockKey("aml:ws:" + id), where: where}
	fail := func(err error) (*Store, error) { pool.Close(); return nil, err }
	if err := migrateShared(ctx, h); err != nil {
		return fail(fmt.Errorf("%s: workspace %s: %w", where, id, err))
	}
	dir := filepath.Join(sh.CacheRoot, id)
	for _, d := range []string{dir, filepath.Join(dir, BlobsDir), filepath.Join(dir, RunsDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fail(fmt.Errorf("local cache of workspace %s: %w", id, err))
		}
	}
	if err := writeBackendFile(dir, sh, id); err != nil {
		return fail(fmt.Errorf("local cache of workspace %s: %w", id, err))
	}
	s := &Store{Dir: dir, db: h, shared: &sharedState{cfg: sh, uuid: id, schema: schema, where: where}}
	m, err := s.Meta(ctx)
	if err != nil {
		return fail(fmt.Errorf("%s: workspace %s is corrupt: %w", where, id, err))
	}
	if m.UID != id {
		return fail(fmt.Errorf("%s: workspace %s has uid %q in its meta row: corrupt", where, id, m.UID))
	}
	s.UID = id
	return s, nil
}

// migrateShared brings an open workspace's schema forward under its lock.
func migrateShared(ctx context.Context, h *handle) error {
	t, err := h.BeginTx(ctx, nil)
	if err != nil {
		return pgError(err)
	}
	defer t.Rollback()
	if err := migratePostgres(ctx, t.tx); err != nil {
		return err
	}
	return t.Commit()
}

// migratePostgres applies the store's migrations (translated) inside tx, whose
// search_path is the workspace's schema and which holds its lock. The version
// is a one-row table, PostgreSQL having no user_version.
func migratePostgres(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);
		INSERT INTO schema_version SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM schema_version)`); err != nil {
		return fmt.Errorf("reading schema version: %w", pgError(err))
	}
	var v int
	if err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); err != nil {
		return fmt.Errorf("reading schema version: %w", pgError(err))
	}
	if v > SchemaVersion {
		return fmt.Errorf("schema version %d, this provider knows up to %d; upgrade the provider: %w", v, SchemaVersion, ErrNewerVersion)
	}
	for ; v < SchemaVersion; v++ {
		ddl, ok := postgresMigrations[v]
		if !ok {
			ddl = postgresDDL(migrations[v])
		}
		if _, err := tx.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("migrating schema %d -> %d: %w", v, v+1, pgError(err))
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = $1`, SchemaVersion); err != nil {
		return err
	}
	// Tables only the shared backend has.
	_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS target_secrets (
		name  TEXT COLLATE "C" PRIMARY KEY,
		nonce BYTEA NOT NULL,
		box   BYTEA NOT NULL
	)`)
	return err
}

// postgresMigrations replace the migrations that use SQLite's own functions.
var postgresMigrations = map[int]string{
	// 4: the workspace's uid. A shared workspace is created at the newest
	// version with its uid (the registry's) in its meta row; none is older.
	3: `ALTER TABLE meta ADD COLUMN uid TEXT COLLATE "C" NOT NULL DEFAULT ''`,
}

// Backend names where the store keeps its records, for errors and the data
// source: "sqlite" or "postgres".
func (s *Store) Backend() string { return s.db.dialect.String() }

// SharedID is the workspace's UUID in a shared backend ("" when embedded).
func (s *Store) SharedID() string {
	if s.shared == nil {
		return ""
	}
	return s.shared.uuid
}

// DeleteShared removes a shared workspace: its schema, its registry row and
// its objects. The local cache is left to the caller.
func DeleteShared(ctx context.Context, sh Shared, ref string) error {
	s, err := OpenShared(ctx, sh, ref)
	if err != nil {
		return err
	}
	id, schema, where, obj := s.shared.uuid, s.shared.schema, s.shared.where, s.shared.cfg.Objects
	s.Close()
	if obj != nil {
		if err := objstore.DeletePrefix(ctx, obj, id+"/"); err != nil {
			return err
		}
	}
	root, _, err := openPostgres(ctx, sh.Postgres, "")
	if err != nil {
		return err
	}
	defer root.Close()
	tx, err := root.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", where, pgError(err))
	}
	defer tx.Rollback()
	for _, q := range []string{`SELECT pg_advisory_xact_lock($1)`, `DROP SCHEMA ` + schema + ` CASCADE`, `DELETE FROM aml.workspaces WHERE uuid = $1`} {
		var args []any
		switch {
		case strings.Contains(q, "advisory"):
			args = []any{registryLock}
		case strings.Contains(q, "$1"):
			args = []any{id}
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("%s: deleting workspace %s: %w", where, id, pgError(err))
		}
	}
	return tx.Commit()
}

type execer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

// insertMeta writes the workspace's own record (the shared backend's; the
// embedded one writes it in initDir).
func insertMeta(ctx context.Context, e execer, meta Meta, created time.Time) error {
	tags, _ := json.Marshal(nonNilMap(meta.Tags))
	_, err := e.ExecContext(ctx, `INSERT INTO meta(id, uid, name, description, tags, created_at) VALUES (1, ?, ?, ?, ?, ?)`,
		meta.UID, meta.Name, meta.Description, string(tags), created.Format(time.RFC3339Nano))
	return err
}

// BackendFile, in a shared workspace's cache directory, says how to reach the
// workspace (connection string, bucket, credentials given in configuration),
// mode 0600 like the embedded workspace's secrets/: it lets this machine's
// detached helpers (pool node agents) open the workspace by its directory, as
// they open an embedded one.
const BackendFile = "backend.json"

type backendFile struct {
	UUID       string            `json:"uuid"`
	Postgres   string            `json:"postgres"`
	S3         objstore.S3Config `json:"s3"`
	SecretsKey string            `json:"secrets_key,omitempty"`
}

func writeBackendFile(dir string, sh Shared, id string) error {
	b, err := json.Marshal(backendFile{UUID: id, Postgres: sh.Postgres, S3: sh.S3, SecretsKey: sh.SecretsKey})
	if err != nil {
		return err
	}
	p := filepath.Join(dir, BackendFile)
	if old, err := os.ReadFile(p); err == nil && string(old) == string(b) {
		return nil
	}
	return writePrivate(p, b)
}

// openBackendFile opens the shared workspace whose cache directory is dir.
func openBackendFile(ctx context.Context, dir string) (*Store, error) {
	b, err := os.ReadFile(filepath.Join(dir, BackendFile))
	if err != nil {
		return nil, err
	}
	var bf backendFile
	if err := json.Unmarshal(b, &bf); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, BackendFile), err)
	}
	return OpenShared(ctx, Shared{Postgres: bf.Postgres, S3: bf.S3, SecretsKey: bf.SecretsKey, CacheRoot: filepath.Dir(dir)}, bf.UUID)
}
