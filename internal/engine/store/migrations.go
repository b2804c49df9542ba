package store

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations[i] moves the schema from version i to i+1. Append only: a released
// migration is never edited.
var migrations = []string{
	// 1: initial schema.
	`CREATE TABLE meta (
		id          INTEGER PRIMARY KEY CHECK (id = 1),
		name        TEXT NOT NULL,
		description TEXT NOT NULL DEFAULT '',
		tags        TEXT NOT NULL DEFAULT '{}',
		created_at  TEXT NOT NULL
	);
	CREATE TABLE run_configurations (
		name             TEXT PRIMARY KEY,
		spec             TEXT NOT NULL,
		environment_hash TEXT NOT NULL,
		created_at       TEXT NOT NULL,
		updated_at       TEXT NOT NULL
	);
	CREATE TABLE runs (
		id          TEXT PRIMARY KEY,
		experiment  TEXT NOT NULL,
		submit_key  TEXT NOT NULL,
		status      TEXT NOT NULL,
		owner       TEXT NOT NULL DEFAULT '',
		returned    INTEGER NOT NULL DEFAULT 0,
		released    INTEGER NOT NULL DEFAULT 0,
		created_at  TEXT NOT NULL,
		record      TEXT NOT NULL
	);
	CREATE INDEX runs_submit_key ON runs (submit_key, returned, released);
	CREATE INDEX runs_experiment ON runs (experiment, created_at);
	CREATE TABLE run_metrics (
		run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
		seq    INTEGER NOT NULL,
		name   TEXT NOT NULL,
		value  REAL NOT NULL,
		step   REAL,
		PRIMARY KEY (run_id, seq)
	);`,
	// 2: attached compute targets (SSH hosts, ...). Secrets are not here: they
	// live in secrets/<name>.json with mode 0600.
	`CREATE TABLE targets (
		name       TEXT PRIMARY KEY,
		kind       TEXT NOT NULL,
		spec       TEXT NOT NULL,
		state      TEXT NOT NULL DEFAULT '{}',
		created_at TEXT NOT NULL,
		updated_at TEXT NOT NULL
	);
	CREATE INDEX runs_status ON runs (status);`,
	// 3: managed pools (aml_compute): node agents and the run queue.
	`CREATE TABLE pool_nodes (
		id           TEXT PRIMARY KEY,
		compute      TEXT NOT NULL,
		slot         INTEGER NOT NULL,
		pid          INTEGER NOT NULL DEFAULT 0,
		ticks        INTEGER NOT NULL DEFAULT 0,
		state        TEXT NOT NULL,
		run_id       TEXT NOT NULL DEFAULT '',
		rank         INTEGER NOT NULL DEFAULT 0,
		started_at   TEXT NOT NULL,
		heartbeat_at TEXT NOT NULL,
		idle_since   TEXT NOT NULL
	);
	CREATE INDEX pool_nodes_compute ON pool_nodes (compute, state);
	CREATE TABLE pool_queue (
		run_id      TEXT PRIMARY KEY,
		compute     TEXT NOT NULL,
		node_count  INTEGER NOT NULL,
		state       TEXT NOT NULL,
		attempts    INTEGER NOT NULL DEFAULT 0,
		enqueued_at TEXT NOT NULL,
		assigned_at TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX pool_queue_compute ON pool_queue (compute, state, enqueued_at);`,
	// 4: the workspace's stable id (a random UUID): ids in Terraform state name
	// it, never the directory, so a moved checkout or another machine plans no
	// change. Existing workspaces get theirs here.
	`ALTER TABLE meta ADD COLUMN uid TEXT NOT NULL DEFAULT '';
	UPDATE meta SET uid = lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
		substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + abs(random()) % 4, 1) ||
		substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))) WHERE uid = '';`,
	// 5: when each metric value was logged (Unix seconds; 0 when unknown).
	`ALTER TABLE run_metrics ADD COLUMN time REAL NOT NULL DEFAULT 0;`,
	// 6: the machine of each pool node agent: with a shared workspace only
	// that machine can check its process; others go by its heartbeat.
	`ALTER TABLE pool_nodes ADD COLUMN host TEXT NOT NULL DEFAULT '';`,
	// 7: each run's submission (run.Record.Submission), so a plan finds the
	// last run of the same submission with one indexed read, however many
	// runs the experiment has. Earlier runs keep '' (found by a scan).
	`ALTER TABLE runs ADD COLUMN submission TEXT NOT NULL DEFAULT '';
	CREATE INDEX runs_submission ON runs (submission, created_at);`,
}

// SchemaVersion is the newest schema this build knows.
var SchemaVersion = len(migrations)

func migrate(ctx context.Context, db *sql.DB) error {
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if v > SchemaVersion {
		return fmt.Errorf("schema version %d, this provider knows up to %d; upgrade the provider: %w", v, SchemaVersion, ErrNewerVersion)
	}
	for ; v < SchemaVersion; v++ {
		if err := applyMigration(ctx, db, v); err != nil {
			return err
		}
	}
	return nil
}

func applyMigration(ctx context.Context, db *sql.DB, from int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// Re-check inside the write lock: another process may have migrated meanwhile.
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return err
	}
	if v != from {
		return nil
	}
	if _, err := tx.ExecContext(ctx, migrations[from]); err != nil {
		return fmt.Errorf("migrating schema %d -> %d: %w", from, from+1, err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", from+1)); err != nil {
		return err
	}
	return tx.Commit()
}
