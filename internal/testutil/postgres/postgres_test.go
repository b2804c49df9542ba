package postgres_test

import (
	"database/sql"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/testutil/postgres"
)

func TestStartStopRestart(t *testing.T) {
	s := postgres.Start(t)
	url := s.NewDB(t)
	ping := func() error {
		db, err := sql.Open("pgx", url)
		if err != nil {
			return err
		}
		defer db.Close()
		return db.Ping()
	}
	if err := ping(); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if err := ping(); err == nil {
		t.Fatal("a stopped server answered")
	}
	s.Restart()
	if err := ping(); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}
