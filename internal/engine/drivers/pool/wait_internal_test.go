package pool

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// Wait learns a rank's end from the status write itself: with the periodic
// check (and the polling fallback) an hour away, only the notification can
// return it before the test's deadline.
func TestWaitWokenByStatusWrite(t *testing.T) {
	oldCheck, oldFirst := waitCheck, pollFirst
	waitCheck, pollFirst = time.Hour, time.Hour
	t.Cleanup(func() { waitCheck, pollFirst = oldCheck, oldFirst })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := testPool(t, "wait", 2)
	s := p.Store
	runDir := filepath.Join(p.RunsRoot(), "run-1")
	for rank := 0; rank < 2; rank++ {
		dir := RankDir(runDir, rank)
		if err := os.MkdirAll(filepath.Dir(supervise.Layout{Dir: dir}.Status()), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := supervise.ResetForRequeue(dir, "queued"); err != nil {
			t.Fatal(err)
		}
	}
	// Assigned and finished in the queue, so nothing asks for a node: the
	// ranks' status files alone say when the run ends.
	if err := s.Enqueue(ctx, "run-1", "p", 2); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishQueued(ctx, "run-1"); err != nil {
		t.Fatal(err)
	}
	e := &execution{p: p, h: handle{Pool: "p", RunDir: runDir, NodeCount: 2}, runID: "run-1"}
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = supervise.MarkEnded(RankDir(runDir, 1), run.Completed, "", "rank 1 done")
		time.Sleep(100 * time.Millisecond)
		_ = supervise.MarkEnded(runDir, run.Completed, "", "rank 0 done")
	}()
	st, err := e.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if st.Status != run.Completed {
		t.Errorf("Wait = %+v, want Completed", st)
	}
}

// testPool is a pool "p" of maxNodes nodes in a new workspace store.
func testPool(t *testing.T, name string, maxNodes int) *Pool {
	t.Helper()
	ctx := context.Background()
	s, err := store.Create(ctx, filepath.Join(t.TempDir(), "ws"), store.Meta{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	spec, _ := json.Marshal(Spec{VMSize: "STANDARD_D1_V2", MaxNodes: maxNodes, IdleSecondsBeforeScaledown: 60})
	if err := s.PutTarget(ctx, store.TargetRow{Name: "p", Kind: Kind, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	return &Pool{Store: s, Name: "p"}
}
