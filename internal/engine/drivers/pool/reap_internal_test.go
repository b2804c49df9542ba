package pool

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// A lost node's rank supervisor that still runs (its node stopped
// heartbeating, or its main thread has exited while other threads have not,
// so the parent-death signal has not come yet) would record its attempt's end
// after the requeue, and the next attempt would read it as the run's result.
// Reap stops it first: here the "node" is a shell whose child writes a Failed
// status 300 ms later, unless it was stopped.
func TestReapStopsTheLostNodesRankBeforeRequeue(t *testing.T) {
	oldLease := LeaseTimeout
	LeaseTimeout = time.Millisecond
	t.Cleanup(func() { LeaseTimeout = oldLease })
	ctx := context.Background()
	p := testPool(t, "reap", 1)
	s := p.Store
	runDir := filepath.Join(p.RunsRoot(), "run-1")
	status := supervise.Layout{Dir: runDir}.Status()
	if err := os.MkdirAll(filepath.Dir(status), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := supervise.ResetForRequeue(runDir, "queued"); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, "run-1", "p", 1); err != nil {
		t.Fatal(err)
	}
	late, _ := json.Marshal(map[string]any{"status": run.Failed, "failure_reason": run.ReasonKilled, "message": "the lost attempt's late write"})
	node := exec.Command("sh", "-c", `(sleep 0.3; printf '%s' "$LATE" > "$DEST") & wait`)
	node.Env = append(os.Environ(), "LATE="+string(late), "DEST="+status)
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = node.Wait(); close(exited) }()
	t.Cleanup(func() { _ = node.Process.Kill(); <-exited })
	if _, err := s.ReserveNodes(ctx, "p", 1, func(int) string { return "n0" }); err != nil {
		t.Fatal(err)
	}
	if err := s.NodeStarted(ctx, "n0", node.Process.Pid, 0); err != nil {
		t.Fatal(err)
	}
	if id, err := s.Claim(ctx, "p", "n0", time.Minute); err != nil || id != "run-1" {
		t.Fatalf("Claim = %q, %v", id, err)
	}
	time.Sleep(10 * time.Millisecond) // the lease runs out
	if err := p.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if q, err := s.QueueEntry(ctx, "run-1"); err != nil || q.State != store.QueueQueued || q.Attempts != 1 {
		t.Fatalf("after the reap: %+v, %v; want queued again", q, err)
	}
	time.Sleep(600 * time.Millisecond)
	if st, err := supervise.ReadState(runDir); err != nil || st.Status != run.Queued {
		t.Fatalf("the requeued run's status is %+v, %v; want Queued (nothing of the lost attempt may write after the requeue)", st, err)
	}
}
