package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// RunConfigRow is a stored run configuration; Spec is the engine's JSON form.
type RunConfigRow struct {
	Name            string
	Spec            json.RawMessage
	EnvironmentHash string
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// PutRunConfig inserts or replaces a run configuration.
func (s *Store) PutRunConfig(ctx context.Context, row RunConfigRow) error {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	_, err := s.db.ExecContext(ctx, `INSERT INTO run_configurations(name, spec, environment_hash, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, environment_hash = excluded.environment_hash, updated_at = excluded.updated_at`,
		row.Name, string(row.Spec), row.EnvironmentHash, now, now)
	return err
}

// GetRunConfig returns ErrNotFound when the name is unknown.
func (s *Store) GetRunConfig(ctx context.Context, name string) (RunConfigRow, error) {
	var row RunConfigRow
	var spec, created, updated string
	err := s.db.QueryRowContext(ctx, `SELECT name, spec, environment_hash, created_at, updated_at FROM run_configurations WHERE name = ?`, name).
		Scan(&row.Name, &spec, &row.EnvironmentHash, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return row, fmt.Errorf("run configuration %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return row, err
	}
	row.Spec = json.RawMessage(spec)
	row.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	row.UpdatedAt, _ = time.Parse(time.RFC3339Nano, updated)
	return row, nil
}

// DeleteRunConfig removes a run configuration; runs keep their own copy of it.
func (s *Store) DeleteRunConfig(ctx context.Context, name string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM run_configurations WHERE name = ?`, name)
	return err
}
