package engine_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

func TestWaitRunProgress(t *testing.T) {
	defer engine.SetProgressIntervals(50*time.Millisecond, 200*time.Millisecond)()
	te := setup(t, nil)
	src := writeSource(t, map[string]string{"train.py": `import time
print("epoch 1 loss 0.9", flush=True)
time.sleep(1.2)
print("epoch 2 loss 0.5", flush=True)
time.sleep(1.2)
`})
	r := te.submit(t, te.request(src, "train.py"))
	var mu sync.Mutex
	var events []engine.Progress
	got, err := te.e.WaitRunProgress(context.Background(), r.ID, func(p engine.Progress) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, p)
	})
	if err != nil || got.Status != run.Completed {
		t.Fatalf("WaitRunProgress = %+v, %v", got, err)
	}
	mu.Lock()
	defer mu.Unlock()
	var msgs []string
	for _, e := range events {
		msgs = append(msgs, e.Message())
	}
	all := strings.Join(msgs, "\n")
	first := events[0]
	if !first.First || first.LogPath != got.LogPath || !strings.Contains(first.Message(), "log: "+got.LogPath) || !strings.Contains(first.Message(), "on local") {
		t.Errorf("first event %q does not say where the log is", first.Message())
	}
	last := events[len(events)-1]
	if !last.Final || last.Status != run.Completed || !strings.Contains(last.Message(), "Completed (exit code 0)") {
		t.Errorf("last event = %q", last.Message())
	}
	for _, want := range []string{"Running on local", "epoch 1 loss 0.9", "epoch 2 loss 0.5"} {
		if !strings.Contains(all, want) {
			t.Errorf("progress lacks %q:\n%s", want, all)
		}
	}
	// A line is reported once, not at every tick.
	if strings.Count(all, "epoch 2 loss 0.5") != 1 {
		t.Errorf("a log line was repeated:\n%s", all)
	}
}

func TestListRunsQueryErrors(t *testing.T) {
	te := setup(t, nil)
	for _, tc := range []struct {
		q    engine.RunQuery
		attr string
		msg  string
	}{
		{engine.RunQuery{Statuses: []string{"Done"}}, "statuses", `"Done" is not a run status; use one of NotStarted`},
		{engine.RunQuery{OrderBy: "best"}, "order_by", `"best" is not an order; use created, start_time, end_time, or metric:<name>`},
		{engine.RunQuery{Experiment: "no spaces"}, "experiment_name", `"no spaces" is not a valid experiment name`},
	} {
		_, err := te.e.ListRuns(context.Background(), te.ws, tc.q)
		fe := fieldErr(t, err)
		if fe.Attr != tc.attr || !strings.Contains(fe.Error(), tc.msg) {
			t.Errorf("ListRuns(%+v) = %v (attribute %s)", tc.q, err, fe.Attr)
		}
	}
}
