package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// InsertRun stores a new run record owned by owner (see ClaimOrphan).
func (s *Store) InsertRun(ctx context.Context, rec *run.Record, owner string) error {
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO runs(id, experiment, submit_key, submission, status, owner, created_at, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		rec.ID, rec.Experiment, rec.SubmitKey, rec.Submission, string(rec.Status), owner, rec.CreatedAt.UTC().Format(time.RFC3339Nano), string(body))
	return err
}

// LastRunOfSubmission returns the newest run recorded with this experiment and
// submission (run.Record.Submission), or nil when there is none.
func (s *Store) LastRunOfSubmission(ctx context.Context, experiment, submission string) (*run.Record, error) {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT id FROM runs WHERE submission = ? AND experiment = ? ORDER BY created_at DESC, id DESC LIMIT 1`,
		submission, experiment).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return s.GetRun(ctx, id)
}

// GetRun returns ErrNotFound when the id is unknown.
func (s *Store) GetRun(ctx context.Context, id string) (*run.Record, error) {
	return getRun(ctx, s.db, id)
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *row
}

func getRun(ctx context.Context, q querier, id string) (*run.Record, error) {
	var body string
	err := q.QueryRowContext(ctx, `SELECT record FROM runs WHERE id = ?`, id).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("run %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var rec run.Record
	if err := json.Unmarshal([]byte(body), &rec); err != nil {
		return nil, fmt.Errorf("run %q record is corrupt: %w", id, err)
	}
	if string(rec.Handle) == "null" {
		rec.Handle = nil // never started: the record was written with no handle
	}
	return &rec, nil
}

// UpdateRun applies fn to the stored record inside one write transaction. A status
// change that the run's state machine forbids is dropped silently when the stored
// run is already terminal (a late observer lost the race) and is an error otherwise.
func (s *Store) UpdateRun(ctx context.Context, id string, fn func(*run.Record) error) (*run.Record, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rec, err := getRun(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	before := *rec
	if err := fn(rec); err != nil {
		return nil, err
	}
	if rec.Status != before.Status {
		if err := run.CheckTransition(before.Status, rec.Status); err != nil {
			if before.Status.Terminal() {
				return &before, nil
			}
			return nil, err
		}
	}
	body, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE runs SET status = ?, record = ? WHERE id = ?`, string(rec.Status), string(body), id); err != nil {
		return nil, err
	}
	return rec, tx.Commit()
}

// ReplaceMetrics stores a run's full metric history.
func (s *Store) ReplaceMetrics(ctx context.Context, id string, ms []run.Metric) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM run_metrics WHERE run_id = ?`, id); err != nil {
		return err
	}
	for i, m := range ms {
		if _, err := tx.ExecContext(ctx, `INSERT INTO run_metrics(run_id, seq, name, value, step, time) VALUES (?, ?, ?, ?, ?, ?)`, id, i, m.Name, m.Value, m.Step, m.Time); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// RunMetrics returns a run's metric history in the order it was logged, at
// most limit values (limit <= 0: all).
func (s *Store) RunMetrics(ctx context.Context, id string, limit int) ([]run.Metric, error) {
	q := `SELECT name, value, step, time FROM run_metrics WHERE run_id = ? ORDER BY seq`
	args := []any{id}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []run.Metric
	for rows.Next() {
		var m run.Metric
		var step sql.NullFloat64
		if err := rows.Scan(&m.Name, &m.Value, &step, &m.Time); err != nil {
			return nil, err
		}
		if step.Valid {
			v := step.Float64
			m.Step = &v
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// RunFilter selects runs for ListRuns; empty fields match every run.
type RunFilter struct {
	Experiment string
	Statuses   []run.Status
	// Unkeyed keeps only runs recorded with no submission (by earlier versions).
	Unkeyed bool
}

// ListRuns returns the records of the runs that match f, oldest first. The
// store filters on what it indexes (experiment, status); the caller filters
// the rest.
func (s *Store) ListRuns(ctx context.Context, f RunFilter) ([]*run.Record, error) {
	q := `SELECT record FROM runs WHERE 1 = 1`
	var args []any
	if f.Experiment != "" {
		q += ` AND experiment = ?`
		args = append(args, f.Experiment)
	}
	if f.Unkeyed {
		q += ` AND submission = ''`
	}
	if len(f.Statuses) > 0 {
		q += ` AND status IN (?` + strings.Repeat(`, ?`, len(f.Statuses)-1) + `)`
		for _, st := range f.Statuses {
			args = append(args, string(st))
		}
	}
	q += ` ORDER BY created_at, id`
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*run.Record
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, err
		}
		var rec run.Record
		if err := json.Unmarshal([]byte(body), &rec); err != nil {
			return nil, fmt.Errorf("a run record is corrupt: %w", err)
		}
		out = append(out, &rec)
	}
	return out, rows.Err()
}

// ClaimOrphan finds a run with this submit key that an earlier, now dead, provider
// process submitted but never reported back to Terraform, and makes newOwner its
// owner. It is how an interrupted apply's run is adopted instead of submitted twice.
// alive reports whether an owner string still names a running process.
func (s *Store) ClaimOrphan(ctx context.Context, submitKey, newOwner string, alive func(owner string) bool) (*run.Record, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id, owner FROM runs WHERE submit_key = ? AND returned = 0 AND released = 0 ORDER BY created_at`, submitKey)
	if err != nil {
		return nil, err
	}
	var id string
	for rows.Next() {
		var cand, owner string
		if err := rows.Scan(&cand, &owner); err != nil {
			rows.Close()
			return nil, err
		}
		// A run of our own process is never an orphan: it is another resource's
		// submission in flight (count = 2 of one identical run), not an
		// interrupted apply's.
		if owner != newOwner && !alive(owner) {
			id = cand
			break
		}
	}
	rows.Close()
	if id == "" {
		return nil, nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE runs SET owner = ? WHERE id = ?`, newOwner, id); err != nil {
		return nil, err
	}
	rec, err := getRun(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	return rec, tx.Commit()
}

// MarkReturned records that Terraform has been told about the run, so it is no
// longer a candidate for adoption.
func (s *Store) MarkReturned(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE runs SET returned = 1, owner = '' WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("run %q: %w", id, ErrNotFound)
	}
	return nil
}

// MarkReleased records that the run's Terraform resource was destroyed; the run
// stays in the workspace as history.
func (s *Store) MarkReleased(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE runs SET released = 1, returned = 1, owner = '' WHERE id = ?`, id)
	return err
}

// CountRuns counts every run record in the workspace.
func (s *Store) CountRuns(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM runs`).Scan(&n)
	return n, err
}

// ActiveRunIDs lists runs whose recorded status is not terminal.
func (s *Store) ActiveRunIDs(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM runs WHERE status NOT IN (?, ?, ?) ORDER BY created_at`,
		string(run.Completed), string(run.Failed), string(run.Canceled))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// CountActiveRuns counts runs whose recorded status is not terminal.
func (s *Store) CountActiveRuns(ctx context.Context) (int, error) {
	ids, err := s.ActiveRunIDs(ctx)
	return len(ids), err
}
