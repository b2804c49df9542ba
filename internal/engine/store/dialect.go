package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
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

func (d *handle) Close() error { return d.sql.Close() }

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
	rows, err := d.sql.QueryContext(ctx, d.rebind(q), args...)
	return rows, d.named(err)
}

func (d *handle) QueryRowContext(ctx context.Context, q string, args ...any) *row {
	return &row{r: d.sql.QueryRowContext(ctx, d.rebind(q), args...), d: d}
}

// ExecContext runs one write. On PostgreSQL it runs in its own transaction
// under the workspace lock, so it never lands in the middle of another
// writer's read-modify-write.
func (d *handle) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if d.dialect != dialectPostgres {
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

func (t *tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	rows, err := t.tx.QueryContext(ctx, t.db.rebind(q), args...)
	return rows, t.db.named(err)
}

func (t *tx) QueryRowContext(ctx context.Context, q string, args ...any) *row {
	return &row{r: t.tx.QueryRowContext(ctx, t.db.rebind(q), args...), d: t.db}
}

func (t *tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
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
