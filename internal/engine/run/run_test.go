package run

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCanTransition(t *testing.T) {
	tests := []struct {
		from, to Status
		want     bool
	}{
		// Staying put is always harmless, even when terminal.
		{Running, Running, true},
		{Completed, Completed, true},
		{Canceled, Canceled, true},

		// The ordinary lifecycle.
		{NotStarted, Queued, true},
		{NotStarted, Starting, true},
		{Queued, Preparing, true},
		{Preparing, Starting, true},
		{Starting, Running, true},
		{Starting, Completed, true}, // a very short script
		{Running, Finalizing, true},
		{Running, Completed, true},
		{Finalizing, Completed, true},

		// Failure and cancellation from any active status.
		{NotStarted, Failed, true},
		{Queued, Canceled, true},
		{Running, Failed, true},
		{Running, CancelRequested, true},
		{Running, Canceled, true},
		{Finalizing, Failed, true},
		{CancelRequested, Canceled, true},
		{CancelRequested, Failed, true},
		{CancelRequested, Finalizing, true},
		// A run that finished on its own while the cancel was on its way.
		{CancelRequested, Completed, true},

		// Backwards moves are forbidden.
		{Running, Starting, false},
		{Running, Queued, true}, // a pool requeues a run whose node was lost
		{Finalizing, Queued, false},
		{Finalizing, Running, false},
		{Starting, NotStarted, false},
		{CancelRequested, Running, false},
		{NotStarted, Finalizing, false},
		{NotStarted, Completed, false},
		// A short run can end between two observations of a queue.
		{Queued, Completed, true},

		// Terminal statuses never move.
		{Completed, Failed, false},
		{Completed, Running, false},
		{Failed, Completed, false},
		{Failed, Canceled, false},
		{Canceled, Running, false},
		{Canceled, Failed, false},
		{Canceled, CancelRequested, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.from)+"->"+string(tt.to), func(t *testing.T) {
			if got := CanTransition(tt.from, tt.to); got != tt.want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", tt.from, tt.to, got, tt.want)
			}
			err := CheckTransition(tt.from, tt.to)
			if tt.want && err != nil {
				t.Errorf("CheckTransition(%s, %s) = %v, want nil", tt.from, tt.to, err)
			}
			if !tt.want {
				if err == nil {
					t.Fatalf("CheckTransition(%s, %s) = nil, want an error", tt.from, tt.to)
				}
				if !strings.Contains(err.Error(), string(tt.from)) || !strings.Contains(err.Error(), string(tt.to)) {
					t.Errorf("error %q does not name both statuses", err)
				}
			}
		})
	}
}

func TestStatusTerminalActive(t *testing.T) {
	terminal := map[Status]bool{Completed: true, Failed: true, Canceled: true}
	for _, s := range AllStatuses {
		if s.Terminal() != terminal[s] {
			t.Errorf("%s.Terminal() = %v", s, s.Terminal())
		}
		if s.Active() == terminal[s] {
			t.Errorf("%s.Active() = %v", s, s.Active())
		}
		// No active status is a dead end: it can always fail or be canceled.
		if s.Active() && (!CanTransition(s, Failed) || !CanTransition(s, Canceled)) {
			t.Errorf("active status %s cannot fail or be canceled", s)
		}
	}
}

func step(f float64) *float64 { return &f }

func TestParseMetrics(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Metric
		wantBad int
	}{
		{"empty", "", nil, 0},
		{"blank lines are not malformed", "\n\n   \n", nil, 0},
		{
			"good lines in order",
			`{"name":"loss","value":0.5,"step":1}
{"name":"accuracy","value":0.9}
  {"name":"loss","value":0.25,"step":2}  
`,
			[]Metric{{"loss", 0.5, step(1), 0}, {"accuracy", 0.9, nil, 0}, {"loss", 0.25, step(2), 0}},
			0,
		},
		{"last line without newline", `{"name":"a","value":1}`, []Metric{{"a", 1, nil, 0}}, 0},
		{
			"malformed lines counted and skipped",
			`not json
{"name":"a","value":1}
{"name":"","value":2}
{"value":3}
{"name":"b","value":"high"}
{"name":"c","value":1
{"name":"d","value":4}
`,
			[]Metric{{"a", 1, nil, 0}, {"d", 4, nil, 0}},
			5,
		},
		{
			"NaN and infinities rejected",
			// JSON has no NaN literal; these are what a careless writer emits.
			`{"name":"a","value":NaN}
{"name":"b","value":Infinity}
{"name":"c","value":-Infinity}
{"name":"d","value":1e999}
{"name":"e","value":2}
`,
			[]Metric{{"e", 2, nil, 0}},
			4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, bad, err := ParseMetrics(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if bad != tt.wantBad {
				t.Errorf("bad = %d, want %d", bad, tt.wantBad)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d metrics %+v, want %d", len(got), got, len(tt.want))
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.Name != w.Name || g.Value != w.Value || (g.Step == nil) != (w.Step == nil) || (g.Step != nil && *g.Step != *w.Step) {
					t.Errorf("metric %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestParseMetricsLongLine(t *testing.T) {
	// A line longer than the scanner's initial buffer is still read.
	long := `{"name":"` + strings.Repeat("x", 100_000) + `","value":1}` + "\n" + `{"name":"after","value":2}` + "\n"
	got, bad, err := ParseMetrics(strings.NewReader(long))
	if err != nil || bad != 0 || len(got) != 2 || got[1].Name != "after" {
		t.Fatalf("got %d metrics, bad %d, err %v", len(got), bad, err)
	}
}

func TestLastValues(t *testing.T) {
	got := LastValues([]Metric{{"loss", 3, nil, 0}, {"acc", 0.5, nil, 0}, {"loss", 1, nil, 0}, {"acc", 0.75, nil, 0}, {"lr", 0.1, nil, 0}})
	want := map[string]float64{"loss": 1, "acc": 0.75, "lr": 0.1}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if m := LastValues(nil); m == nil || len(m) != 0 {
		t.Errorf("LastValues(nil) = %#v, want an empty map", m)
	}
}

func TestReadMetricsFile(t *testing.T) {
	dir := t.TempDir()
	ms, _, err := ReadMetricsFile(dir, filepath.Join(dir, "missing.jsonl"))
	if err != nil || ms != nil {
		t.Fatalf("missing file: %v, %v", ms, err)
	}
	p := filepath.Join(dir, "m.jsonl")
	if err := os.WriteFile(p, []byte("junk\n{\"name\":\"a\",\"value\":7}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ms, dropped, err := ReadMetricsFile(dir, p)
	if err != nil || len(ms) != 1 || ms[0].Value != 7 || dropped != 1 {
		t.Fatalf("got %+v, %v", ms, err)
	}
}

func numbered(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "line %03d\n", i)
	}
	return b.String()
}

func TestTailLines(t *testing.T) {
	tests := []struct {
		name     string
		content  string
		n        int
		maxBytes int64
		want     string
	}{
		{"empty file", "", 5, 1024, ""},
		{"fewer lines than n", "a\nb\n", 5, 1024, "a\nb\n"},
		{"exactly n", "a\nb\nc\n", 3, 1024, "a\nb\nc\n"},
		{"more lines than n", numbered(10), 3, 1024, "line 008\nline 009\nline 010\n"},
		{"no trailing newline", "a\nb\nc", 2, 1024, "b\nc\n"},
		{"trailing blank lines dropped", "a\nb\n\n\n", 2, 1024, "a\nb\n"},
		// 100 lines of 9 bytes; the last 30 bytes start mid-line, and that partial
		// line is dropped rather than shown as if it were whole.
		{"truncated read drops the partial first line", numbered(100), 50, 30, "line 098\nline 099\nline 100\n"},
		{"truncated read still limited to n", numbered(100), 2, 30, "line 099\nline 100\n"},
		{"invalid utf-8 replaced", "ok\n\xff\xfebad\n", 5, 1024, "ok\n\uFFFDbad\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "log.txt")
			if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := TailLines(filepath.Dir(p), p, tt.n, tt.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("TailLines = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTailLinesMissingFile(t *testing.T) {
	dir := t.TempDir()
	got, err := TailLines(dir, filepath.Join(dir, "nope.txt"), 10, 1024)
	if err != nil || got != "" {
		t.Fatalf("missing file: %q, %v", got, err)
	}
}

func TestTailLinesUnreadable(t *testing.T) {
	// A directory is not a log file: the error must surface, not be hidden as "".
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := TailLines(dir, filepath.Join(dir, "d"), 10, 1024); err == nil {
		t.Fatal("want an error for a directory")
	}
}

func TestDurationSeconds(t *testing.T) {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	end := start.Add(1500 * time.Millisecond)
	r := &Record{}
	if d := r.DurationSeconds(end); d != 0 {
		t.Errorf("not started: %v", d)
	}
	r.StartTime = &start
	if d := r.DurationSeconds(start.Add(2 * time.Second)); d != 2 {
		t.Errorf("running: %v", d)
	}
	r.EndTime = &end
	if d := r.DurationSeconds(start.Add(time.Hour)); d != 1.5 {
		t.Errorf("ended: %v", d)
	}
}

func TestSortedKeys(t *testing.T) {
	got := SortedKeys(map[string]int{"b": 1, "a": 2, "c": 3})
	if strings.Join(got, ",") != "a,b,c" {
		t.Errorf("got %v", got)
	}
}
