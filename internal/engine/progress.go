package engine

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// Progress is one event of a run being waited for: a status change
// (LogLine empty) or the last line its log has (LogLine set). The first event
// carries the log's path.
type Progress struct {
	RunID   string
	Status  run.Status
	Target  string
	Nodes   int
	LogPath string // the first event only
	// Builder is what prepares the environment (status Preparing).
	Builder string
	// At the end: why a run did not complete, and its exit code.
	FailureReason string
	ExitCode      *int
	LogLine       string
	First, Final  bool
}

// Message is a one-line account of the event, for a log.
func (p Progress) Message() string {
	if p.LogLine != "" {
		return fmt.Sprintf("run %s: %s", p.RunID, p.LogLine)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "run %s: %s", p.RunID, p.Status)
	switch {
	case p.Status == run.Preparing && p.Builder != "":
		fmt.Fprintf(&b, " (building the environment with %s)", p.Builder)
	case p.Status == run.Running || p.First:
		fmt.Fprintf(&b, " on %s", p.Target)
		if p.Nodes > 1 {
			fmt.Fprintf(&b, " (%d nodes)", p.Nodes)
		}
	}
	if p.Final && p.FailureReason != "" {
		fmt.Fprintf(&b, " (%s", p.FailureReason)
		if p.ExitCode != nil {
			fmt.Fprintf(&b, ", exit code %d", *p.ExitCode)
		}
		b.WriteString(")")
	} else if p.Final && p.ExitCode != nil {
		fmt.Fprintf(&b, " (exit code %d)", *p.ExitCode)
	}
	if p.LogPath != "" {
		fmt.Fprintf(&b, "; log: %s", p.LogPath)
	}
	return b.String()
}

// ProgressFunc receives the events of a run WaitRunProgress waits for.
type ProgressFunc func(Progress)

// How often a run being waited for is observed for progress, and how often
// its last log line is reported (when it changed).
var (
	progressEvery = 2 * time.Second
	logLineEvery  = 5 * time.Second
)

// WaitRunProgress is WaitRun reporting progress to fn (nil: none): the status
// as the wait starts (with the log's path), every change of status, the last
// log line every few seconds when it changed, and the result.
func (e *Engine) WaitRunProgress(ctx context.Context, id string, fn ProgressFunc) (*Run, error) {
	if fn == nil {
		return e.WaitRun(ctx, id)
	}
	s, rec, err := e.load(ctx, id)
	if err != nil {
		return nil, err
	}
	nodes := 1
	if rc, err := e.ReadRunConfig(ctx, RunConfigID(s.UID, rec.RunConfig)); err == nil && rc.Spec.NodeCount > 1 {
		nodes = rc.Spec.NodeCount
	}
	base := Progress{RunID: rec.ID, Target: rec.Target, Nodes: nodes}
	first := base
	first.Status, first.First, first.LogPath = rec.Status, true, e.toRun(s, rec).LogPath
	fn(first)
	var stop func()
	if rec.Status.Active() && len(rec.Handle) > 0 {
		if ex, err := e.recoverRun(ctx, s, rec); err == nil {
			stop = watch(ctx, ex, base, rec.Status, fn)
		}
	}
	r, werr := e.waitRun(ctx, s, rec)
	if stop != nil {
		stop()
	}
	if r != nil {
		last := base
		last.Status, last.FailureReason, last.ExitCode, last.Final = r.Status, r.FailureReason, r.ExitCode, true
		fn(last)
	}
	return r, werr
}

// watch observes ex until stop is called, reporting status changes and the
// last log line.
func watch(ctx context.Context, ex drivers.Execution, base Progress, status run.Status, fn ProgressFunc) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(progressEvery)
		defer tick.Stop()
		var offset int64
		var partial []byte
		lastLine, shown := "", ""
		nextLog := time.Now().Add(logLineEvery)
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if st, err := ex.Status(ctx); err == nil && st.Status != status && !st.Status.Terminal() {
				status = st.Status
				p := base
				p.Status, p.Builder = st.Status, st.Builder
				fn(p)
			}
			if time.Now().Before(nextLog) {
				continue
			}
			nextLog = time.Now().Add(logLineEvery)
			b, next, err := ex.Logs(ctx, offset)
			if err != nil {
				continue
			}
			offset = next
			if line, rest := lastCompleteLine(append(partial, b...)); line != "" {
				lastLine, partial = line, rest
			} else {
				partial = rest
			}
			if lastLine != "" && lastLine != shown {
				shown = lastLine
				p := base
				p.Status, p.LogLine = status, run.SanitizeText(lastLine)
				fn(p)
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// lastCompleteLine returns the last non-empty complete line of b (cut to 500
// bytes) and what follows it (an unfinished line, at most 64 KiB kept).
func lastCompleteLine(b []byte) (string, []byte) {
	end := bytes.LastIndexByte(b, '\n')
	if end < 0 {
		return "", keepTail(b)
	}
	rest := keepTail(b[end+1:])
	lines := bytes.Split(b[:end], []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if l := bytes.TrimSpace(lines[i]); len(l) > 0 {
			if len(l) > 500 {
				l = append(l[:500:500], "..."...)
			}
			return string(bytes.ToValidUTF8(l, []byte("\uFFFD"))), rest
		}
	}
	return "", rest
}

func keepTail(b []byte) []byte {
	if len(b) > 64<<10 {
		b = b[len(b)-64<<10:]
	}
	return append([]byte(nil), b...)
}
