package engine

import (
	"context"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// MaxMetricHistory bounds the metric history one read returns (the workspace
// keeps it all; the aml_run data source says when it was cut).
const MaxMetricHistory = 100000

// MetricHistory is a run's metric values in the order they were logged, at
// most MaxMetricHistory; total is how many the workspace keeps.
func (e *Engine) MetricHistory(ctx context.Context, id string) (ms []run.Metric, truncated bool, err error) {
	s, rec, err := e.load(ctx, id)
	if err != nil {
		return nil, false, err
	}
	ms, err = s.RunMetrics(ctx, rec.ID, MaxMetricHistory+1)
	if err != nil {
		return nil, false, err
	}
	if len(ms) > MaxMetricHistory {
		return ms[:MaxMetricHistory], true, nil
	}
	return ms, false, nil
}

// RunQuery selects runs of a workspace (aml_runs). Empty fields match every run.
type RunQuery struct {
	Experiment string
	Statuses   []string
	Target     string
	// Tags must all match: a run's tags (Terraform's) or, failing that, the
	// tags its script set.
	Tags map[string]string
	// OrderBy is "created" (default), "start_time", "end_time" or "metric:<name>";
	// Descending reverses it. Runs without the metric sort last either way.
	OrderBy    string
	Descending bool
	// Limit keeps the first n after ordering (0: all).
	Limit int
}

// RunOrders are the values RunQuery.OrderBy takes (besides "metric:<name>").
var RunOrders = []string{"created", "start_time", "end_time"}

// CheckRunQuery checks a query's values; a fault is a *FieldError naming the attribute.
func CheckRunQuery(q RunQuery) error {
	for _, st := range q.Statuses {
		if !slices.Contains(run.AllStatuses, run.Status(st)) {
			return fieldErr("statuses", "%q is not a run status; use one of %s", st, strings.Join(statusNames(), ", "))
		}
	}
	if q.Experiment != "" && !NamePattern.MatchString(q.Experiment) {
		return fieldErr("experiment_name", "%q is not a valid experiment name: use up to 128 letters, digits, '.', '-' or '_', starting with a letter or digit", q.Experiment)
	}
	switch o := q.OrderBy; {
	case o == "" || slices.Contains(RunOrders, o):
	case strings.HasPrefix(o, "metric:") && len(o) > len("metric:"):
	default:
		return fieldErr("order_by", "%q is not an order; use %s, or metric:<name>", o, strings.Join(RunOrders, ", "))
	}
	if q.Limit < 0 {
		return fieldErr("limit", "%d: must be 0 (all) or more", q.Limit)
	}
	return nil
}

func statusNames() []string {
	var out []string
	for _, s := range run.AllStatuses {
		out = append(out, string(s))
	}
	return out
}

// ListRuns returns the runs of a workspace that match q, ordered. Runs are read
// from the store only (no target is contacted): an active run shows its
// status as last recorded.
func (e *Engine) ListRuns(ctx context.Context, workspaceID string, q RunQuery) ([]*Run, error) {
	if err := CheckRunQuery(q); err != nil {
		return nil, err
	}
	s, err := e.open(ctx, workspaceID)
	if err != nil {
		return nil, fieldErr("workspace_id", "%v", err)
	}
	f := store.RunFilter{Experiment: q.Experiment}
	for _, st := range q.Statuses {
		f.Statuses = append(f.Statuses, run.Status(st))
	}
	recs, err := s.ListRuns(ctx, f)
	if err != nil {
		return nil, err
	}
	var out []*Run
	for _, rec := range recs {
		if q.Target != "" && rec.Target != q.Target {
			continue
		}
		if !tagsMatch(rec, q.Tags) {
			continue
		}
		out = append(out, e.toRun(s, rec))
	}
	sortRuns(out, q.OrderBy, q.Descending)
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

func tagsMatch(rec *run.Record, want map[string]string) bool {
	for k, v := range want {
		got, ok := rec.Tags[k]
		if !ok {
			got, ok = rec.ScriptTags[k]
		}
		if !ok || got != v {
			return false
		}
	}
	return true
}

// sortRuns orders runs stably (ties keep creation order); a run without the
// key (no end time yet, not that metric) sorts last in both directions.
func sortRuns(runs []*Run, orderBy string, desc bool) {
	key := func(r *Run) (float64, bool) {
		switch {
		case orderBy == "start_time":
			if r.StartTime == nil {
				return 0, false
			}
			return float64(r.StartTime.UnixNano()), true
		case orderBy == "end_time":
			if r.EndTime == nil {
				return 0, false
			}
			return float64(r.EndTime.UnixNano()), true
		case strings.HasPrefix(orderBy, "metric:"):
			v, ok := r.Metrics[strings.TrimPrefix(orderBy, "metric:")]
			return v, ok && !math.IsNaN(v)
		}
		return 0, false // created: the store's order
	}
	if orderBy == "" || orderBy == "created" {
		if desc {
			for i, j := 0, len(runs)-1; i < j; i, j = i+1, j-1 {
				runs[i], runs[j] = runs[j], runs[i]
			}
		}
		return
	}
	sort.SliceStable(runs, func(i, j int) bool {
		a, aok := key(runs[i])
		b, bok := key(runs[j])
		switch {
		case aok != bok:
			return aok
		case !aok:
			return false
		case desc:
			return a > b
		default:
			return a < b
		}
	})
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
