package store_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
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

	t.Run("newer schema", func(t *testing.T) {
		s := newStore(t)
		dir := s.Dir
		s.Close()
		newer := store.SchemaVersion + 1
		db, err := sql.Open("sqlite", filepath.Join(dir, store.DBFile))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", newer)); err != nil {
			t.Fatal(err)
		}
		db.Close()
		_, err = store.Open(ctx, dir)
		if !errors.Is(err, store.ErrNewerVersion) {
			t.Fatalf("err = %v, want ErrNewerVersion", err)
		}
		for _, want := range []string{fmt.Sprintf("version %d", newer), fmt.Sprintf("up to %d", store.SchemaVersion)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		}
	})
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.PutRunConfig(ctx, store.RunConfigRow{Name: "rc", Spec: json.RawMessage(`{"a":1}`), EnvironmentHash: "h1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertRun(ctx, newRecord("r1", "k"), "o"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := store.Open(ctx, s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if n, _ := s2.CountRuns(ctx); n != 1 {
		t.Errorf("runs after reopen = %d", n)
	}
	if row, err := s2.GetRunConfig(ctx, "rc"); err != nil || string(row.Spec) != `{"a":1}` {
		t.Errorf("run config after reopen: %+v %v", row, err)
	}
}

func TestRunConfigs(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.GetRunConfig(ctx, "rc"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown config: %v", err)
	}
	if err := s.PutRunConfig(ctx, store.RunConfigRow{Name: "rc", Spec: json.RawMessage(`{"v":1}`), EnvironmentHash: "h1"}); err != nil {
		t.Fatal(err)
	}
	first, _ := s.GetRunConfig(ctx, "rc")
	if err := s.PutRunConfig(ctx, store.RunConfigRow{Name: "rc", Spec: json.RawMessage(`{"v":2}`), EnvironmentHash: "h2"}); err != nil {
		t.Fatal(err)
	}
	row, err := s.GetRunConfig(ctx, "rc")
	if err != nil {
		t.Fatal(err)
	}
	if string(row.Spec) != `{"v":2}` || row.EnvironmentHash != "h2" {
		t.Errorf("after update: %+v", row)
	}
	if !row.CreatedAt.Equal(first.CreatedAt) || row.UpdatedAt.Before(row.CreatedAt) {
		t.Errorf("timestamps: created %v (was %v), updated %v", row.CreatedAt, first.CreatedAt, row.UpdatedAt)
	}
	if err := s.DeleteRunConfig(ctx, "rc"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetRunConfig(ctx, "rc"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted config: %v", err)
	}
}

func newRecord(id, key string) *run.Record {
	return &run.Record{
		ID:         id,
		Experiment: "exp",
		Target:     "local",
		SubmitKey:  key,
		Status:     run.NotStarted,
		CreatedAt:  time.Now().UTC(),
		Tags:       map[string]string{"t": "1"},
	}
}

func TestRunInsertGetUpdate(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.GetRun(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown run: %v", err)
	}
	rec := newRecord("r1", "k1")
	if err := s.InsertRun(ctx, rec, "me"); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertRun(ctx, newRecord("r1", "k1"), "me"); err == nil {
		t.Error("inserting a duplicate id succeeded")
	}
	got, err := s.GetRun(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "r1" || got.Status != run.NotStarted || got.Tags["t"] != "1" || got.SubmitKey != "k1" {
		t.Errorf("got %+v", got)
	}

	for _, st := range []run.Status{run.Starting, run.Running} {
		got, err = s.UpdateRun(ctx, "r1", func(r *run.Record) error { r.Status = st; return nil })
		if err != nil || got.Status != st {
			t.Fatalf("-> %s: %+v %v", st, got, err)
		}
	}
	if n, _ := s.CountActiveRuns(ctx); n != 1 {
		t.Errorf("active runs = %d, want 1", n)
	}

	// Forbidden move from an active status is an error and changes nothing.
	_, err = s.UpdateRun(ctx, "r1", func(r *run.Record) error { r.Status = run.Starting; r.LogTail = "x"; return nil })
	if err == nil || !strings.Contains(err.Error(), "Running") {
		t.Fatalf("Running -> Starting: err = %v", err)
	}
	if got, _ := s.GetRun(ctx, "r1"); got.Status != run.Running || got.LogTail != "" {
		t.Errorf("rejected update was stored: %+v", got)
	}

	// An error from fn aborts the update.
	boom := errors.New("boom")
	if _, err := s.UpdateRun(ctx, "r1", func(r *run.Record) error { r.LogTail = "y"; return boom }); !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
	if got, _ := s.GetRun(ctx, "r1"); got.LogTail != "" {
		t.Errorf("aborted update was stored: %+v", got)
	}

	code := 0
	got, err = s.UpdateRun(ctx, "r1", func(r *run.Record) error {
		r.Status, r.ExitCode, r.Metrics = run.Completed, &code, map[string]float64{"acc": 0.5}
		return nil
	})
	if err != nil || got.Status != run.Completed {
		t.Fatalf("-> Completed: %+v %v", got, err)
	}
	if n, _ := s.CountActiveRuns(ctx); n != 0 {
		t.Errorf("active runs = %d, want 0", n)
	}

	// A late observer of a terminal run loses silently: no error, nothing stored.
	got, err = s.UpdateRun(ctx, "r1", func(r *run.Record) error { r.Status, r.FailureReason = run.Failed, run.ReasonLost; return nil })
	if err != nil {
		t.Fatalf("late update of a terminal run: %v", err)
	}
	if got.Status != run.Completed || got.FailureReason != "" {
		t.Errorf("late update returned %+v", got)
	}
	stored, _ := s.GetRun(ctx, "r1")
	if stored.Status != run.Completed || stored.FailureReason != "" || stored.ExitCode == nil || *stored.ExitCode != 0 || stored.Metrics["acc"] != 0.5 {
		t.Errorf("stored after late update: %+v", stored)
	}

	if _, err := s.UpdateRun(ctx, "nope", func(*run.Record) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update of unknown run: %v", err)
	}
	if n, _ := s.CountRuns(ctx); n != 1 {
		t.Errorf("CountRuns = %d", n)
	}
}

func TestReplaceMetrics(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.InsertRun(ctx, newRecord("r1", "k"), "o"); err != nil {
		t.Fatal(err)
	}
	one := 1.0
	if err := s.ReplaceMetrics(ctx, "r1", []run.Metric{{Name: "a", Value: 1, Step: &one}, {Name: "a", Value: 2}}); err != nil {
		t.Fatal(err)
	}
	if err := s.ReplaceMetrics(ctx, "r1", []run.Metric{{Name: "b", Value: 3}}); err != nil {
		t.Fatal(err)
	}
	// Metrics must belong to a run (foreign keys are on).
	if err := s.ReplaceMetrics(ctx, "ghost", []run.Metric{{Name: "b", Value: 3}}); err == nil {
		t.Error("metrics for an unknown run were accepted")
	}
}

func TestClaimOrphan(t *testing.T) {
	ctx := context.Background()
	alive := map[string]bool{"live": true}
	isAlive := func(o string) bool { return alive[o] }

	tests := []struct {
		name    string
		owner   string
		mark    func(s *store.Store, ctx context.Context, id string) error
		adopted bool
	}{
		{"dead owner is adopted", "dead", nil, true},
		{"empty owner is adopted", "", nil, true},
		{"live owner is not adopted", "live", nil, false},
		{"own run is not adopted", "me", nil, false},
		{"returned run is not adopted", "dead", (*store.Store).MarkReturned, false},
		{"released run is not adopted", "dead", (*store.Store).MarkReleased, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			if err := s.InsertRun(ctx, newRecord("r1", "key"), tt.owner); err != nil {
				t.Fatal(err)
			}
			if tt.mark != nil {
				if err := tt.mark(s, ctx, "r1"); err != nil {
					t.Fatal(err)
				}
			}
			if rec, err := s.ClaimOrphan(ctx, "other-key", "me", isAlive); err != nil || rec != nil {
				t.Fatalf("another submit key was claimed: %v %v", rec, err)
			}
			rec, err := s.ClaimOrphan(ctx, "key", "me", isAlive)
			if err != nil {
				t.Fatal(err)
			}
			if (rec != nil) != tt.adopted {
				t.Fatalf("adopted = %v, want %v", rec != nil, tt.adopted)
			}
			if rec != nil {
				if rec.ID != "r1" {
					t.Errorf("adopted %q", rec.ID)
				}
				// Now owned by "me": a third process with a live "me" cannot take it.
				alive["me"] = true
				defer delete(alive, "me")
				if again, err := s.ClaimOrphan(ctx, "key", "third", isAlive); err != nil || again != nil {
					t.Errorf("a claimed run was claimed again: %v %v", again, err)
				}
			}
		})
	}
}

func TestClaimOrphanPicksOldest(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	older := newRecord("old", "key")
	older.CreatedAt = time.Now().Add(-time.Hour).UTC()
	newer := newRecord("new", "key")
	for _, r := range []*run.Record{newer, older} {
		if err := s.InsertRun(ctx, r, "dead"); err != nil {
			t.Fatal(err)
		}
	}
	rec, err := s.ClaimOrphan(ctx, "key", "me", func(string) bool { return false })
	if err != nil || rec == nil || rec.ID != "old" {
		t.Fatalf("claimed %+v, %v; want the oldest", rec, err)
	}
}

// Two Store handles on one workspace stand for two provider processes (Terraform
// runs resources in parallel, and several terraform processes may share one
// workspace): concurrent writes from both must all land.
func TestConcurrentStores(t *testing.T) {
	ctx := context.Background()
	s1 := newStore(t)
	s2, err := store.Open(ctx, s1.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()

	const goroutines, perGoroutine = 5, 10 // 50 runs per store
	var wg sync.WaitGroup
	errc := make(chan error, 2*goroutines)
	for si, s := range []*store.Store{s1, s2} {
		for g := 0; g < goroutines; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perGoroutine; i++ {
					id := fmt.Sprintf("s%d-g%d-r%d", si, g, i)
					if err := s.InsertRun(ctx, newRecord(id, id), "o"); err != nil {
						errc <- fmt.Errorf("insert %s: %w", id, err)
						return
					}
					for _, st := range []run.Status{run.Starting, run.Running, run.Completed} {
						if _, err := s.UpdateRun(ctx, id, func(r *run.Record) error {
							r.Status = st
							r.LogTail += string(st) + ";"
							return nil
						}); err != nil {
							errc <- fmt.Errorf("update %s -> %s: %w", id, st, err)
							return
						}
					}
					if _, err := s.ClaimOrphan(ctx, id, "o2", func(string) bool { return true }); err != nil {
						errc <- fmt.Errorf("claim %s: %w", id, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	const want = 2 * goroutines * perGoroutine
	for _, s := range []*store.Store{s1, s2} {
		if n, err := s.CountRuns(ctx); err != nil || n != want {
			t.Errorf("CountRuns = %d, %v; want %d", n, err, want)
		}
		if n, err := s.CountActiveRuns(ctx); err != nil || n != 0 {
			t.Errorf("CountActiveRuns = %d, %v; want 0", n, err)
		}
	}
	rec, err := s1.GetRun(ctx, "s1-g4-r9")
	if err != nil || rec.Status != run.Completed || rec.LogTail != "Starting;Running;Completed;" {
		t.Errorf("a run written through the other handle: %+v %v", rec, err)
	}
}
