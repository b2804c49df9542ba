package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// dialect is the SQL flavour of a store's database. The store's queries are
// written once, in the common subset of SQLite and PostgreSQL, with `?`
// placeholders; handle rebinds them and gives PostgreSQL the same one-writer
// transactions that SQLite's BEGIN IMMEDIATE gives.
type dialect int

const (
	dialectSQLite dialect = iota
	dialectPostgres
)

func (d dialect) String() string {
	if d == dialectPostgres {
		return "postgres"
	}
	return "sqlite"
}

// handle is the store's handle on its database.
//
// On PostgreSQL every write (a transaction, or a single statement outside one)
// first takes a transaction-scoped advisory lock keyed by the workspace, so the
// writers of one workspace are serialized across connections, processes and
// machines exactly as SQLite serializes them (BEGIN IMMEDIATE): a transaction
// reads what the previous writer committed and nobody writes in between. Reads
// outside a transaction take no lock (as SQLite's WAL readers). Workspaces
// sharing one database do not wait for each other.
type handle struct {
	sql     *sql.DB
	dialect dialect
	lockKey int64  // advisory lock of the workspace (PostgreSQL)
	where   string // the server, for errors (PostgreSQL): "PostgreSQL at host:port/db"

	// stmts holds the SQLite statements this handle prepared, by query text
	// (prepared). SQLite parses a statement's text on every unprepared run,
	// which was about 40% of the store's CPU in a run's create; PostgreSQL's
	// driver keeps its own statement cache.
	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt
}

// maxStmts bounds prepared's cache: the store's queries are a fixed set, so a
// query past the bound is one built at run time, and runs unprepared.
const maxStmts = 128

// prepared is the cached prepared statement of q (SQLite), or nil: for
// PostgreSQL, past the bound, or when preparing fails (the query then runs
// unprepared and reports its own error).
func (d *handle) prepared(ctx context.Context, q string) *sql.Stmt {
	if d.dialect != dialectSQLite {
		return nil
	}
	d.stmtMu.Lock()
	st, ok := d.stmts[q]
	full := len(d.stmts) >= maxStmts
	d.stmtMu.Unlock()
	if ok || full {
		return st
	}
	// Prepared without the lock: preparing takes a connection, which a
	// transaction that is about to ask for a statement may hold.
	st, err := d.sql.PrepareContext(ctx, q)
	if err != nil {
		return nil
	}
	d.stmtMu.Lock()
	defer d.stmtMu.Unlock()
	if prev, ok := d.stmts[q]; ok {
		st.Close() // another goroutine prepared it meanwhile
		return prev
	}
	if d.stmts == nil {
		d.stmts = map[string]*sql.Stmt{}
	}
	d.stmts[q] = st
	return st
}

// named puts the server's name in front of a database error (a connection
// the server closed, a failed statement), so an apply's error says which
// server failed. No rows is not a fault of the server and stays as it is.
func (d *handle) named(err error) error {
	if err == nil || d.where == "" || errors.Is(err, sql.ErrNoRows) || strings.HasPrefix(err.Error(), d.where) {
		return err
	}
	return fmt.Errorf("%s: %w", d.where, pgError(err))
}

// row is a single-row result whose Scan error is named (see handle.named).
type row struct {
	r *sql.Row
	d *handle
}

func (r *row) Scan(dest ...any) error { return r.d.named(r.r.Scan(dest...)) }

func (d *handle) Close() error {
	d.stmtMu.Lock()
	for q, st := range d.stmts {
		st.Close()
		delete(d.stmts, q)
	}
	d.stmtMu.Unlock()
	return d.sql.Close()
}

func (d *handle) rebind(q string) string {
	if d.dialect != dialectPostgres {
		return q
	}
	return rebindDollar(q)
}

// rebindDollar turns `?` placeholders into $1, $2, ... (none of the store's
// queries has a `?` inside a string literal; quoted text is skipped anyway).
func rebindDollar(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	quoted := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			quoted = !quoted
			b.WriteByte(c)
		case c == '?' && !quoted:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func (d *handle) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := d.prepared(ctx, q); st != nil {
		rows, err := st.QueryContext(ctx, args...)
		return rows, d.named(err)
	}
	rows, err := d.sql.QueryContext(ctx, d.rebind(q), args...)
	return rows, d.named(err)
}

func (d *handle) QueryRowContext(ctx context.Context, q string, args ...any) *row {
	if st := d.prepared(ctx, q); st != nil {
		return &row{r: st.QueryRowContext(ctx, args...), d: d}
	}
	return &row{r: d.sql.QueryRowContext(ctx, d.rebind(q), args...), d: d}
}

// ExecContext runs one write. On PostgreSQL it runs in its own transaction
// under the workspace lock, so it never lands in the middle of another
// writer's read-modify-write.
func (d *handle) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if d.dialect != dialectPostgres {
		if st := d.prepared(ctx, q); st != nil {
			return st.ExecContext(ctx, args...)
		}
		return d.sql.ExecContext(ctx, q, args...)
	}
	tx, err := d.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return res, tx.Commit()
}

// BeginTx starts a write transaction (SQLite: BEGIN IMMEDIATE through the
// DSN's _txlock; PostgreSQL: the workspace's advisory lock, held to commit).
func (d *handle) BeginTx(ctx context.Context, opts *sql.TxOptions) (*tx, error) {
	t, err := d.sql.BeginTx(ctx, opts)
	if err != nil {
		return nil, d.named(err)
	}
	if d.dialect == dialectPostgres {
		if _, err := t.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, d.lockKey); err != nil {
			t.Rollback()
			return nil, d.named(err)
		}
	}
	return &tx{tx: t, db: d}, nil
}

// tx is a write transaction with the store's placeholders rebound.
type tx struct {
	tx *sql.Tx
	db *handle
}

// stmt is the transaction's use of q's prepared statement (prepared), or nil.
// The connection keeps the statement prepared; the transaction's handle on it
// is closed with the transaction.
func (t *tx) stmt(ctx context.Context, q string) *sql.Stmt {
	if st := t.db.prepared(ctx, q); st != nil {
		return t.tx.StmtContext(ctx, st)
	}
	return nil
}

func (t *tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, q); st != nil {
		rows, err := st.QueryContext(ctx, args...)
		return rows, t.db.named(err)
	}
	rows, err := t.tx.QueryContext(ctx, t.db.rebind(q), args...)
	return rows, t.db.named(err)
}

func (t *tx) QueryRowContext(ctx context.Context, q string, args ...any) *row {
	if st := t.stmt(ctx, q); st != nil {
		return &row{r: st.QueryRowContext(ctx, args...), d: t.db}
	}
	return &row{r: t.tx.QueryRowContext(ctx, t.db.rebind(q), args...), d: t.db}
}

func (t *tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, q); st != nil {
		res, err := st.ExecContext(ctx, args...)
		return res, t.db.named(err)
	}
	res, err := t.tx.ExecContext(ctx, t.db.rebind(q), args...)
	return res, t.db.named(err)
}

func (t *tx) Commit() error   { return t.db.named(t.tx.Commit()) }
func (t *tx) Rollback() error { return t.tx.Rollback() }

var (
	ddlInteger = regexp.MustCompile(`\bINTEGER\b`)
	ddlReal    = regexp.MustCompile(`\bREAL\b`)
	ddlText    = regexp.MustCompile(`\bTEXT\b`)
)

// postgresDDL translates a migration written for SQLite: integers are 64-bit
// (SQLite's INTEGER is; PostgreSQL's is 32), REAL is a double, and text
// compares byte-wise as SQLite's BINARY collation does (timestamps are
// RFC 3339 text compared and ordered as strings; a locale collation could
// order them otherwise).
func postgresDDL(q string) string {
	q = ddlInteger.ReplaceAllString(q, "BIGINT")
	q = ddlReal.ReplaceAllString(q, "DOUBLE PRECISION")
	q = ddlText.ReplaceAllString(q, `TEXT COLLATE "C"`)
	return q
}
