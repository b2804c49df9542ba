package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// TargetRow is an attached compute target. Spec is its configuration, State what
// the engine learned (probe facts, pinned host key).
type TargetRow struct {
	Name      string
	Kind      string
	Spec      json.RawMessage
	State     json.RawMessage
	CreatedAt time.Time
}

// PutTarget inserts or replaces a target.
func (s *Store) PutTarget(ctx context.Context, row TargetRow) error {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if len(row.State) == 0 {
		row.State = json.RawMessage("{}")
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO targets(name, kind, spec, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, spec = excluded.spec, state = excluded.state, updated_at = excluded.updated_at`,
		row.Name, row.Kind, string(row.Spec), string(row.State), now, now)
	return err
}

// GetTarget returns ErrNotFound for an unknown name.
func (s *Store) GetTarget(ctx context.Context, name string) (TargetRow, error) {
	var row TargetRow
	var spec, state, created string
	err := s.db.QueryRowContext(ctx, `SELECT name, kind, spec, state, created_at FROM targets WHERE name = ?`, name).
		Scan(&row.Name, &row.Kind, &spec, &state, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return row, fmt.Errorf("compute target %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return row, err
	}
	row.Spec, row.State = json.RawMessage(spec), json.RawMessage(state)
	row.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	return row, nil
}

// TargetNames lists the attached targets.
func (s *Store) TargetNames(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name FROM targets ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

// DeleteTarget removes a target and its secrets file.
func (s *Store) DeleteTarget(ctx context.Context, name string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM targets WHERE name = ?`, name); err != nil {
		return err
	}
	if err := s.deleteSharedSecrets(ctx, name); err != nil {
		return err
	}
	err := os.Remove(s.secretsPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// ActiveRunsOn lists the ids of runs on a target (or in a run's own pool of
// that name) whose recorded status is not terminal.
func (s *Store) ActiveRunsOn(ctx context.Context, target string) ([]string, error) {
	ids, err := s.ActiveRunIDs(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		rec, err := s.GetRun(ctx, id)
		if err != nil {
			return nil, err
		}
		if rec.Target == target || rec.Pool == target {
			out = append(out, id)
		}
	}
	return out, nil
}

const secretsDir = "secrets"

func (s *Store) secretsPath(name string) string {
	return filepath.Join(s.Dir, secretsDir, name+".json")
}

// PutSecrets stores a target's credentials readable by the owner only: the
// engine needs them for later refreshes, after Terraform has gone.
func (s *Store) PutSecrets(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, secretsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	if err := writePrivate(s.secretsPath(name), b); err != nil {
		return err
	}
	if s.shared != nil {
		return s.putSharedSecrets(name, b)
	}
	return nil
}

// GetSecrets reads a target's credentials into v.
func (s *Store) GetSecrets(name string, v any) error {
	b, err := os.ReadFile(s.secretsPath(name))
	if errors.Is(err, os.ErrNotExist) && s.shared != nil {
		// Another machine attached it (or this cache was lost).
		b, err = s.getSharedSecrets(name)
		if err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("credentials of compute target %q: %w", name, err)
	}
	return json.Unmarshal(b, v)
}

// writePrivate writes b to p readable by the owner only (0600), through a
// temporary file renamed into place, so a reader never sees half of it.
func writePrivate(p string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), p)
}
