package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

func testReopenKeepsData(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.create(t)
	if err := s.PutRunConfig(ctx, store.RunConfigRow{Name: "rc", Spec: json.RawMessage(`{"a":1}`), EnvironmentHash: "h1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertRun(ctx, newRecord("r1", "k"), "o"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := b.open(t, s)
	if n, _ := s2.CountRuns(ctx); n != 1 {
		t.Errorf("runs after reopen = %d", n)
	}
	if row, err := s2.GetRunConfig(ctx, "rc"); err != nil || string(row.Spec) != `{"a":1}` {
		t.Errorf("run config after reopen: %+v %v", row, err)
	}
}

func testRunConfigs(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.create(t)
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

func testRunInsertGetUpdate(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.create(t)
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
	if err := s.MarkReturned(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("MarkReturned of an unknown run: %v, want ErrNotFound", err)
	}
	if err := s.MarkReturned(ctx, "r1"); err != nil {
		t.Errorf("MarkReturned: %v", err)
	}
	if n, _ := s.CountRuns(ctx); n != 1 {
		t.Errorf("CountRuns = %d", n)
	}
}

func testReplaceMetrics(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.create(t)
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

func testClaimOrphan(t *testing.T, b backend) {
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
			s := b.create(t)
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

func testClaimOrphanPicksOldest(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.create(t)
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
func testConcurrentStores(t *testing.T, b backend) {
	ctx := context.Background()
	s1 := b.create(t)
	s2 := b.open(t, s1)

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

// The newest run of a submission comes from its index; runs recorded with no
// submission (earlier versions) are listed apart.
func testLastRunOfSubmission(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.create(t)
	t0 := time.Now().UTC()
	for i, r := range []struct{ id, sub, exp string }{{"old", "", "exp"}, {"a1", "A", "exp"}, {"a2", "A", "exp"}, {"b1", "B", "exp"}, {"a3", "A", "other"}} {
		rec := newRecord(r.id, r.id)
		rec.Submission, rec.Experiment, rec.CreatedAt = r.sub, r.exp, t0.Add(time.Duration(i)*time.Second)
		if err := s.InsertRun(ctx, rec, ""); err != nil {
			t.Fatal(err)
		}
	}
	for sub, want := range map[string]string{"A": "a2", "B": "b1", "C": ""} {
		got, err := s.LastRunOfSubmission(ctx, "exp", sub)
		if err != nil {
			t.Fatal(err)
		}
		if id := ""; got != nil {
			id = got.ID
			if id != want || got.Submission != sub {
				t.Errorf("submission %s: got %s (%q), want %s", sub, id, got.Submission, want)
			}
		} else if want != "" {
			t.Errorf("submission %s: none, want %s", sub, want)
		}
	}
	recs, err := s.ListRuns(ctx, store.RunFilter{Experiment: "exp", Unkeyed: true})
	if err != nil || len(recs) != 1 || recs[0].ID != "old" {
		t.Errorf("unkeyed runs = %v, %v", recs, err)
	}
}
