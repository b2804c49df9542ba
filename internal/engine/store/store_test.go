package store_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

func newStore(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Create(context.Background(), filepath.Join(t.TempDir(), "ws"), store.Meta{Name: "ws1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// leftovers lists the temporary siblings Create may leave behind.
func leftovers(t *testing.T, parent string) []string {
	t.Helper()
	entries, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.Contains(e.Name(), ".creating-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestCreate(t *testing.T) {
	ctx := context.Background()
	parent := t.TempDir()
	dir := filepath.Join(parent, "nested", "ws")
	created := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	s, err := store.Create(ctx, dir, store.Meta{Name: "team-a", Description: "d", Tags: map[string]string{"k": "v"}, CreatedAt: created})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Dir != dir {
		t.Errorf("Dir = %q, want %q", s.Dir, dir)
	}
	for _, p := range []string{store.DBFile, store.BlobsDir, store.RunsDir} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("workspace lacks %s: %v", p, err)
		}
	}
	if s.BlobsPath() != filepath.Join(dir, store.BlobsDir) || s.RunDir("r1") != filepath.Join(dir, store.RunsDir, "r1") {
		t.Errorf("paths: %s %s", s.BlobsPath(), s.RunDir("r1"))
	}
	m, err := s.Meta(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "team-a" || m.Description != "d" || m.Tags["k"] != "v" || !m.CreatedAt.Equal(created) {
		t.Errorf("meta = %+v", m)
	}
	if got := leftovers(t, filepath.Dir(dir)); len(got) != 0 {
		t.Errorf("leftover temp dirs: %v", got)
	}

	if err := s.UpdateMeta(ctx, "new", nil); err != nil {
		t.Fatal(err)
	}
	m, _ = s.Meta(ctx)
	if m.Description != "new" || m.Tags == nil || len(m.Tags) != 0 {
		t.Errorf("after update meta = %+v", m)
	}
}

func TestCreateInEmptyExistingDir(t *testing.T) {
	dir := t.TempDir() // exists and is empty: a user may pre-create the folder
	s, err := store.Create(context.Background(), dir, store.Meta{Name: "ws1"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, store.DBFile)); err != nil {
		t.Fatal(err)
	}
}

func TestCreateAdoptsSameName(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "ws")
	s1, err := store.Create(ctx, dir, store.Meta{Name: "ws1", Description: "first"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.InsertRun(ctx, newRecord("r1", "k"), "o"); err != nil {
		t.Fatal(err)
	}
	s1.Close()

	s2, err := store.Create(ctx, dir, store.Meta{Name: "ws1", Description: "second"})
	if err != nil {
		t.Fatalf("same name must adopt: %v", err)
	}
	defer s2.Close()
	if n, _ := s2.CountRuns(ctx); n != 1 {
		t.Errorf("adopted workspace has %d runs, want its existing 1", n)
	}
	if m, _ := s2.Meta(ctx); m.Description != "first" {
		t.Errorf("adoption rewrote the workspace: %+v", m)
	}

	_, err = store.Create(ctx, dir, store.Meta{Name: "other"})
	if !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("different name: err = %v, want ErrAlreadyExists", err)
	}
	for _, want := range []string{dir, `"ws1"`, `"other"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestCreateErrors(t *testing.T) {
	ctx := context.Background()
	parent := t.TempDir()
	file := filepath.Join(parent, "afile")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	notWS := filepath.Join(parent, "notws")
	if err := os.MkdirAll(notWS, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(notWS, "keep.txt"), []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		dir     string
		mention string
	}{
		{"path is a file", file, file},
		{"parent is a file", filepath.Join(file, "ws"), file},
		{"relative path", "relative/ws", "relative/ws"},
		{"non-empty directory that is not a workspace", notWS, notWS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := store.Create(ctx, tt.dir, store.Meta{Name: "ws1"})
			if err == nil {
				s.Close()
				t.Fatal("Create succeeded")
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not mention %s", err, tt.mention)
			}
			if got := leftovers(t, parent); len(got) != 0 {
				t.Errorf("leftover temp dirs: %v", got)
			}
		})
	}
	if b, err := os.ReadFile(filepath.Join(notWS, "keep.txt")); err != nil || string(b) != "precious" {
		t.Errorf("a failed Create touched an existing directory: %q %v", b, err)
	}
	if b, _ := os.ReadFile(file); string(b) != "x" {
		t.Errorf("a failed Create touched an existing file")
	}
}

func TestCreateFailureLeavesNothing(t *testing.T) {
	// Failing half-way (the database cannot be initialised under a canceled
	// context) must leave neither the workspace nor its temporary sibling.
	parent := t.TempDir()
	dir := filepath.Join(parent, "ws")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s, err := store.Create(ctx, dir, store.Meta{Name: "ws1"})
	if err == nil {
		s.Close()
		t.Fatal("Create under a canceled context succeeded")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace dir exists after a failed Create: %v", err)
	}
	if got := leftovers(t, parent); len(got) != 0 {
		t.Errorf("leftover temp dirs: %v", got)
	}
	// And a later Create succeeds.
	s, err = store.Create(context.Background(), dir, store.Meta{Name: "ws1"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestConcurrentCreateSameWorkspace(t *testing.T) {
	// Two applies creating the same workspace at once both end up with it.
	parent := t.TempDir()
	dir := filepath.Join(parent, "ws")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := store.Create(context.Background(), dir, store.Meta{Name: "ws1"})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("creator %d: %v", i, err)
		}
	}
	if got := leftovers(t, parent); len(got) != 0 {
		t.Errorf("leftover temp dirs: %v", got)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()

	t.Run("missing directory", func(t *testing.T) {
		_, err := store.Open(ctx, filepath.Join(t.TempDir(), "nope"))
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})

	t.Run("directory without database", func(t *testing.T) {
		_, err := store.Open(ctx, t.TempDir())
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})

	t.Run("path is a file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "f")
		os.WriteFile(p, nil, 0o644)
		_, err := store.Open(ctx, p)
		if !errors.Is(err, store.ErrNotWorkspace) || !strings.Contains(err.Error(), p) {
			t.Fatalf("err = %v, want ErrNotWorkspace naming %s", err, p)
		}
	})

	t.Run("foreign sqlite database", func(t *testing.T) {
		dir := t.TempDir()
		dbPath := filepath.Join(dir, store.DBFile)
		db, err := sql.Open("sqlite", dbPath)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes(body) VALUES ('hi')`); err != nil {
			t.Fatal(err)
		}
		db.Close()
		_, err = store.Open(ctx, dir)
		if !errors.Is(err, store.ErrNotWorkspace) {
			t.Fatalf("err = %v, want ErrNotWorkspace", err)
		}
		// It was not migrated into ours.
		db, _ = sql.Open("sqlite", dbPath)
		defer db.Close()
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'runs'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("foreign database was modified: runs tables = %d, %v", n, err)
		}
		// Nor switched to WAL mode: nothing was written before the refusal.
		var mode string
		if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "delete" {
			t.Errorf("foreign database journal_mode = %q (%v), want it left at delete", mode, err)
		}
		if _, err := os.Stat(dbPath + "-wal"); err == nil {
			t.Error("a WAL file was created next to the foreign database")
		}
	})

	t.Run("garbage file", func(t *testing.T) {
		dir := t.TempDir()
		garbage := []byte(strings.Repeat("this is not a database\n", 400))
		if err := os.WriteFile(filepath.Join(dir, store.DBFile), garbage, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := store.Open(ctx, dir)
		if err == nil {
			t.Fatal("Open of a garbage file succeeded")
		}
		if !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("error %q does not mention corrupt", err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, store.DBFile)); string(b) != string(garbage) {
			t.Error("the garbage file was modified")
		}
	})
}

// TestStatementsPreparedOnce: the embedded store prepares each of its
// queries once and reuses it, inside transactions too, and a bad query
// still reports its own error.
func TestStatementsPreparedOnce(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	cycle := func(id string) {
		t.Helper()
		if err := s.InsertRun(ctx, newRecord(id, "k-"+id), "me"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetRun(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateRun(ctx, id, func(r *run.Record) error { r.Status = run.Starting; return nil }); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkReturned(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	cycle("r1")
	n := store.PreparedStatements(s)
	if n == 0 {
		t.Fatal("no statement was prepared")
	}
	for _, id := range []string{"r2", "r3"} {
		cycle(id)
	}
	if m := store.PreparedStatements(s); m != n {
		t.Errorf("%d prepared statements after the same work again, %d before: a statement was prepared again", m, n)
	}
	if got, err := s.GetRun(ctx, "r3"); err != nil || got.Status != run.Starting {
		t.Errorf("r3 = %+v, %v", got, err)
	}
}
