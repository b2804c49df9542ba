package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

type cli struct {
	stdout, stderr io.Writer
	g              globals
}

// start parses a command's flags (extra registers its own) and opens the
// workspace; it returns the positional arguments.
func (c *cli) start(ctx context.Context, name string, args []string, npos int, extra func(*flag.FlagSet)) (*found, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c.g.register(fs)
	if extra != nil {
		extra(fs)
	}
	pos, err := parse(fs, args)
	if err != nil {
		return nil, nil, err
	}
	if npos >= 0 && len(pos) != npos {
		if npos == 1 {
			return nil, nil, usageErr("%s: expected one RUN argument, got %d", name, len(pos))
		}
		return nil, nil, usageErr("%s: unexpected arguments: %s", name, strings.Join(pos, " "))
	}
	f, err := openWorkspace(ctx, &c.g)
	return f, pos, err
}

// startRun is start for a command on one RUN: the workspace and the run's full id.
func (c *cli) startRun(ctx context.Context, name string, args []string, extra func(*flag.FlagSet)) (*found, string, error) {
	f, pos, err := c.start(ctx, name, args, 1, extra)
	if err != nil {
		return nil, "", err
	}
	id, err := f.runID(ctx, pos[0])
	if err != nil {
		f.Close()
		return nil, "", err
	}
	return f, id, nil
}

func (c *cli) workspace(ctx context.Context, args []string) error {
	f, _, err := c.start(ctx, "workspace", args, 0, nil)
	if err != nil {
		return err
	}
	defer f.Close()
	v := viewWorkspace(f.ws, f.how)
	if c.g.json {
		return writeJSON(c.stdout, v)
	}
	fmt.Fprintf(c.stdout, "workspace %s (%s)\n  dir:      %s\n  runs:     %d\n  found by: %s\n", v.Name, v.ID, v.Dir, v.RunCount, v.FoundBy)
	return nil
}

func (c *cli) targets(ctx context.Context, args []string) error {
	f, _, err := c.start(ctx, "targets", args, 0, nil)
	if err != nil {
		return err
	}
	defer f.Close()
	ts, err := f.eng.ListTargets(ctx, f.ws.ID)
	if err != nil {
		return err
	}
	views := make([]targetView, 0, len(ts))
	for _, t := range ts {
		views = append(views, viewTarget(t))
	}
	if c.g.json {
		return writeJSON(c.stdout, views)
	}
	t := termOf(c.stdout)
	tb := &table{head: []string{"NAME", "KIND", "STATE", "NODES (IDLE/BUSY/STARTING)", "FACTS"}}
	tb.paint = []func(string) string{nil, nil, func(s string) string {
		if strings.HasPrefix(s, "Succeeded") {
			return t.paint(green, s)
		}
		if strings.HasPrefix(s, "Unknown") || strings.HasPrefix(s, "Failed") {
			return t.paint(red, s)
		}
		return s
	}}
	for _, v := range views {
		nodes := "-"
		if n := v.Nodes; n != nil {
			nodes = fmt.Sprintf("%d/%d/%d", n.Idle, n.Busy, n.Starting)
			if n.QueuedRuns > 0 {
				nodes += fmt.Sprintf(" (%d queued)", n.QueuedRuns)
			}
		}
		tb.add(v.Name, v.Kind, v.ProvisioningState, nodes, facts(v))
	}
	tb.print(c.stdout, t)
	return nil
}

func facts(v targetView) string {
	f := v.Facts
	var parts []string
	if v.Address != "" {
		parts = append(parts, v.Address)
	}
	if f.OS != "" {
		parts = append(parts, f.OS+"/"+f.Arch)
	}
	if f.Cores > 0 {
		parts = append(parts, fmt.Sprintf("%d cores", f.Cores))
	}
	if f.MemoryBytes > 0 {
		parts = append(parts, fmt.Sprintf("%.1f GiB", float64(f.MemoryBytes)/(1<<30)))
	}
	if f.GPUs > 0 {
		parts = append(parts, fmt.Sprintf("%d GPUs", f.GPUs))
	}
	if f.Python != "" {
		parts = append(parts, "python "+f.Python)
	}
	if f.Docker {
		parts = append(parts, "docker")
	}
	return strings.Join(parts, ", ")
}

func (c *cli) runs(ctx context.Context, args []string) error {
	var q engine.RunQuery
	var statuses, metrics, order string
	f, _, err := c.start(ctx, "runs", args, 0, func(fs *flag.FlagSet) {
		fs.StringVar(&q.Experiment, "experiment", "", "only runs of this experiment")
		fs.StringVar(&q.Experiment, "e", "", "shorthand for --experiment")
		fs.StringVar(&statuses, "status", "", "only runs with these statuses (comma-separated)")
		fs.StringVar(&q.Target, "target", "", "only runs on this compute target")
		fs.StringVar(&metrics, "metrics", "", "metrics to show (comma-separated; default: the 3 most runs have)")
		fs.StringVar(&order, "order-by", "created", "created, start_time, end_time or metric:<name>")
		fs.BoolVar(&q.Descending, "desc", false, "reverse the order")
		fs.IntVar(&q.Limit, "limit", 0, "at most this many runs (0: all)")
	})
	if err != nil {
		return err
	}
	defer f.Close()
	for _, s := range strings.Split(statuses, ",") {
		if s = strings.TrimSpace(s); s != "" {
			q.Statuses = append(q.Statuses, canonicalStatus(s))
		}
	}
	q.OrderBy = order
	if err := engine.CheckRunQuery(q); err != nil {
		return usageErr("%v", err)
	}
	runs, err := f.eng.ListRuns(ctx, f.ws.ID, q)
	if err != nil {
		return err
	}
	if c.g.json {
		views := make([]runView, 0, len(runs))
		for _, r := range runs {
			views = append(views, viewRun(r))
		}
		return writeJSON(c.stdout, views)
	}
	names := mainMetrics(runs, 3)
	if metrics != "" {
		names = strings.Split(metrics, ",")
	}
	t := termOf(c.stdout)
	now := time.Now()
	tb := &table{head: append([]string{"RUN", "EXPERIMENT", "TARGET", "STATUS", "STARTED", "DURATION"}, names...)}
	tb.paint = []func(string) string{nil, nil, nil, func(s string) string { return t.paint(statusColor(run.Status(strings.TrimSpace(s))), s) }}
	for _, r := range runs {
		status := string(r.Status)
		if r.FailureReason != "" && r.Status != run.Completed {
			status += " (" + r.FailureReason + ")"
		}
		started := r.StartTime
		if started == nil {
			c := r.CreatedAt
			started = &c
		}
		row := []string{r.RunID, r.Experiment, r.ComputeTarget, status, ago(started, now), seconds(r.DurationSeconds)}
		for _, n := range names {
			if v, ok := r.Metrics[n]; ok {
				row = append(row, num(v))
			} else {
				row = append(row, "-")
			}
		}
		tb.add(row...)
	}
	if len(runs) == 0 {
		fmt.Fprintln(c.stderr, "no runs")
		return nil
	}
	tb.print(c.stdout, t)
	return nil
}

// canonicalStatus accepts statuses in any case ("failed" is Failed).
func canonicalStatus(s string) string {
	for _, st := range run.AllStatuses {
		if strings.EqualFold(string(st), s) {
			return string(st)
		}
	}
	return s
}

// detail is one run with everything the run page and `runs show` show.
func detail(ctx context.Context, eng *engine.Engine, id string) (*runDetailView, error) {
	r, err := eng.ReadRun(ctx, id)
	if err != nil {
		return nil, err
	}
	v := &runDetailView{runView: viewRun(r), Script: r.Script, Command: r.Command, Arguments: orSlice(r.Arguments),
		SourceDirectory: r.SourceDirectory, EnvironmentHash: r.EnvironmentHash, EnvironmentCacheHit: r.EnvironmentCacheHit,
		EnvironmentVariables: orEmpty(r.EnvironmentVariables), SnapshotHash: r.SnapshotHash, SnapshotFileCount: r.SnapshotFiles,
		SnapshotBytes: r.SnapshotBytes, Params: r.Params, ScriptTags: r.ScriptTags, Details: orEmpty(r.Details),
		OutputFiles: r.OutputFiles, OutputsPath: r.OutputsPath, LogPath: r.LogPath, Traceback: r.Traceback, Timeline: timeline(r)}
	entries, err := eng.RunSnapshotFiles(ctx, id)
	if err != nil {
		v.Message = strings.TrimPrefix(v.Message+"; "+err.Error(), "; ")
	}
	v.SnapshotFiles = []snapshotFile{}
	for _, e := range entries {
		v.SnapshotFiles = append(v.SnapshotFiles, snapshotFile{Path: run.EncodeName(e.Path), Size: e.Size, Mode: fmt.Sprintf("%04o", e.Mode&0o7777)})
	}
	return v, nil
}

func orSlice(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (c *cli) runShow(ctx context.Context, args []string) error {
	f, id, err := c.startRun(ctx, "runs show", args, nil)
	if err != nil {
		return err
	}
	defer f.Close()
	v, err := detail(ctx, f.eng, id)
	if err != nil {
		return notFoundIf(err)
	}
	if c.g.json {
		return writeJSON(c.stdout, v)
	}
	t := termOf(c.stdout)
	now := time.Now()
	w := c.stdout
	clean := run.SanitizeText
	fmt.Fprintf(w, "run %s\n", clean(v.RunID))
	status := t.paint(statusColor(v.Status), string(v.Status))
	if v.FailureReason != "" && v.Status != run.Completed {
		status += " (" + v.FailureReason + ")"
	}
	kv := &table{head: []string{"", ""}}
	kv.add("status", status)
	if v.ExitCode != nil {
		kv.add("exit code", fmt.Sprint(*v.ExitCode))
	}
	kv.add("experiment", v.Experiment)
	kv.add("target", v.Target)
	kv.add("run config", v.RunConfig)
	cmd := v.Script
	if len(v.Command) > 0 {
		cmd = strings.Join(v.Command, " ")
	}
	kv.add("script", strings.TrimSpace(cmd+" "+strings.Join(v.Arguments, " ")))
	kv.add("source", v.SourceDirectory)
	kv.add("snapshot", fmt.Sprintf("%s (%d files, %d bytes)", v.SnapshotHash, v.SnapshotFileCount, v.SnapshotBytes))
	kv.add("environment", v.EnvironmentHash)
	for _, e := range v.Timeline {
		at := "-"
		if e.At != nil {
			at = e.At.Local().Format("2006-01-02 15:04:05") + " (" + ago(e.At, now) + ")"
		}
		kv.add(strings.ToLower(e.Phase), at)
	}
	kv.add("duration", seconds(v.DurationSeconds))
	kv.add("log", v.LogPath)
	kv.add("outputs", fmt.Sprintf("%s (%d files)", v.OutputsPath, len(v.OutputFiles)))
	if v.Message != "" {
		kv.add("message", v.Message)
	}
	printKV(w, kv, t)
	section := func(name string, m map[string]string) {
		if len(m) == 0 {
			return
		}
		fmt.Fprintln(w, "\n"+t.paint("1", name))
		kt := &table{}
		for _, k := range run.SortedKeys(m) {
			kt.add("  "+k, m[k])
		}
		printKV(w, kt, t)
	}
	ms := map[string]string{}
	for k, val := range v.Metrics {
		ms[k] = num(val)
	}
	section("metrics", ms)
	section("params", v.Params)
	section("tags", v.Tags)
	return nil
}

// printKV prints a two-column table without its header line.
func printKV(w io.Writer, tb *table, t term) {
	tb.head = []string{"", ""}
	var b strings.Builder
	tb.print(&b, term{width: t.width})
	lines := strings.SplitN(b.String(), "\n", 2)
	if len(lines) == 2 {
		fmt.Fprint(w, lines[1])
	}
}

func notFoundIf(err error) error {
	if engine.IsNotFound(err) {
		return notFound("%v", err)
	}
	return err
}

func (c *cli) metrics(ctx context.Context, args []string) error {
	var history bool
	f, id, err := c.startRun(ctx, "metrics", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&history, "history", false, "every logged value, by step")
	})
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := f.eng.ReadRun(ctx, id)
	if err != nil {
		return notFoundIf(err)
	}
	if !history {
		if c.g.json {
			return writeJSON(c.stdout, r.Metrics)
		}
		tb := &table{head: []string{"METRIC", "VALUE"}}
		for _, k := range run.SortedKeys(r.Metrics) {
			tb.add(k, num(r.Metrics[k]))
		}
		tb.print(c.stdout, termOf(c.stdout))
		return nil
	}
	ms, truncated, err := f.eng.LiveMetricHistory(ctx, id)
	if err != nil {
		return err
	}
	if truncated {
		fmt.Fprintf(c.stderr, "aml: the first %d values only\n", engine.MaxMetricHistory)
	}
	if c.g.json {
		out := make([]metricView, 0, len(ms))
		for _, m := range ms {
			out = append(out, metricView(m))
		}
		return writeJSON(c.stdout, out)
	}
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	tb := &table{head: []string{"METRIC", "STEP", "VALUE"}}
	for _, m := range ms {
		step := "-"
		if m.Step != nil {
			step = num(*m.Step)
		}
		tb.add(m.Name, step, num(m.Value))
	}
	tb.print(c.stdout, termOf(c.stdout))
	return nil
}

// outcome is the exit code of a finished run.
func outcome(r *engine.Run) error {
	msg := fmt.Sprintf("run %s ended %s", r.RunID, r.Status)
	if r.FailureReason != "" {
		msg += " (" + r.FailureReason
		if r.ExitCode != nil {
			msg += fmt.Sprintf(", exit code %d", *r.ExitCode)
		}
		msg += ")"
	}
	switch r.Status {
	case run.Completed:
		return nil
	case run.Canceled:
		return &codeError{code: exitCanceled, err: errors.New(msg)}
	}
	return &codeError{code: exitFailed, err: errors.New(msg)}
}

// pollEvery is how often an active run is observed while followed.
var pollEvery = 500 * time.Millisecond

func (c *cli) logs(ctx context.Context, args []string) error {
	var follow bool
	var fromStart int64
	f, id, err := c.startRun(ctx, "logs", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&follow, "f", false, "follow an active run until it ends; exit with its outcome")
		fs.BoolVar(&follow, "follow", false, "same as -f")
		fs.Int64Var(&fromStart, "offset", 0, "start at this byte of the log")
	})
	if err != nil {
		return err
	}
	defer f.Close()
	t := termOf(c.stdout)
	offset := fromStart
	for {
		b, next, active, err := f.eng.RunLogs(ctx, id, offset)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return notFoundIf(err)
		}
		if active && (c.g.json || t.width > 0) {
			if whole := completeRunes(b); len(whole) < len(b) && len(whole) > 0 {
				next -= int64(len(b) - len(whole))
				b = whole
			}
		}
		if len(b) > 0 {
			if c.g.json {
				if err := writeJSON(c.stdout, map[string]any{"offset": offset, "next": next, "text": string(b)}); err != nil {
					return err
				}
			} else if t.width > 0 {
				// On a terminal, what the run wrote is shown without its
				// escape sequences; a pipe gets the bytes as written.
				fmt.Fprint(c.stdout, run.SanitizeText(string(b)))
			} else if _, err := c.stdout.Write(b); err != nil {
				return err
			}
			offset = next
		}
		full := len(b) == engine.MaxLogChunk
		if full {
			continue
		}
		if !follow {
			return nil
		}
		if !active && len(b) == 0 {
			break
		}
		if len(b) == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(pollEvery):
			}
		}
	}
	r, err := f.eng.ReadRun(ctx, id)
	if err != nil {
		return err
	}
	return outcome(r)
}

func (c *cli) wait(ctx context.Context, args []string) error {
	f, id, err := c.startRun(ctx, "wait", args, nil)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		r, err := f.eng.ReadRun(ctx, id)
		if err != nil {
			return notFoundIf(err)
		}
		if r.Status.Terminal() {
			if c.g.json {
				if err := writeJSON(c.stdout, viewRun(r)); err != nil {
					return err
				}
			}
			return outcome(r)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * pollEvery):
		}
	}
}

func (c *cli) cancel(ctx context.Context, args []string) error {
	f, id, err := c.startRun(ctx, "cancel", args, nil)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := f.eng.CancelRun(ctx, id)
	if err != nil {
		return notFoundIf(err)
	}
	if c.g.json {
		return writeJSON(c.stdout, viewRun(r))
	}
	fmt.Fprintf(c.stdout, "run %s: %s\n", run.SanitizeText(r.RunID), r.Status)
	return nil
}
