package store

import (
	"context"
	"fmt"
)

// SetSchemaVersion writes a schema version into an open store's database, as
// a newer provider would have (tests of the refusal).
func SetSchemaVersion(ctx context.Context, s *Store, v int) error {
	if s.db.dialect == dialectPostgres {
		_, err := s.db.sql.ExecContext(ctx, `UPDATE schema_version SET version = $1`, v)
		return err
	}
	_, err := s.db.sql.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v))
	return err
}

// PreparedStatements is how many statements s's handle keeps prepared.
func PreparedStatements(s *Store) int {
	s.db.stmtMu.Lock()
	defer s.db.stmtMu.Unlock()
	return len(s.db.stmts)
}
