package run

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// An MLflow file store (what MLFLOW_TRACKING_URI=file:... makes MLflow write)
// is laid out as
//
//	<store>/<experiment_id>/meta.yaml
//	<store>/<experiment_id>/<run_id>/meta.yaml        run_id, start_time, lifecycle_stage, ...
//	<store>/<experiment_id>/<run_id>/metrics/<name>   lines "<timestamp_ms> <value> <step>"
//	<store>/<experiment_id>/<run_id>/params/<name>    the value
//	<store>/<experiment_id>/<run_id>/tags/<name>      the value
//	<store>/<experiment_id>/<run_id>/artifacts/...
//
// where a name may hold '/' (a subdirectory). The script wrote all of it:
// every file is read with OpenRunFile and a bound, links are never followed
// into a directory, and the walk stops at fixed counts.

// Bounds on what is read from an MLflow store.
const (
	maxMLflowRuns        = 100
	maxMLflowMetricNames = 10000
	maxMLflowDepth       = 8
)

// MLflowData is what the MLflow runs of one training run logged, merged in
// the order the MLflow runs started.
type MLflowData struct {
	Metrics []Metric
	Params  KeyValues
	Tags    KeyValues // without MLflow's own mlflow.* tags
	// ArtifactDirs are the runs' artifacts directories (that exist and are
	// real directories), to be moved into the run's outputs.
	ArtifactDirs []string
	// Dropped counts metric lines that could not be used; Warnings say what
	// could not be read.
	Dropped  int
	Warnings []string
}

type mlflowRun struct {
	dir   string
	start int64
	id    string
}

// ReadMLflowStore reads the MLflow file store at store (inside root). A
// missing store is no data.
func ReadMLflowStore(root, store string) (*MLflowData, error) {
	d := &MLflowData{}
	if !realDir(store) {
		return d, nil
	}
	var runs []mlflowRun
	exps, err := os.ReadDir(store)
	if err != nil {
		return d, err
	}
	for _, exp := range exps {
		expDir := filepath.Join(store, exp.Name())
		if !exp.IsDir() || strings.HasPrefix(exp.Name(), ".") || exp.Name() == "models" || !realDir(expDir) {
			continue
		}
		entries, err := os.ReadDir(expDir)
		if err != nil {
			d.Warnings = append(d.Warnings, fmt.Sprintf("MLflow experiment %s not read: %v", exp.Name(), err))
			continue
		}
		for _, e := range entries {
			dir := filepath.Join(expDir, e.Name())
			if !e.IsDir() || !realDir(dir) {
				continue
			}
			meta, err := ReadRunFile(root, filepath.Join(dir, "meta.yaml"), 64<<10)
			if err != nil {
				continue // not a run (a logged model, traces)
			}
			id, start, deleted := parseRunMeta(meta)
			if id == "" || deleted {
				continue
			}
			if len(runs) == maxMLflowRuns {
				d.Warnings = append(d.Warnings, fmt.Sprintf("more than %d MLflow runs; the rest were not read", maxMLflowRuns))
				break
			}
			runs = append(runs, mlflowRun{dir: dir, start: start, id: id})
		}
	}
	sort.SliceStable(runs, func(i, j int) bool {
		if runs[i].start != runs[j].start {
			return runs[i].start < runs[j].start
		}
		return runs[i].id < runs[j].id
	})
	budget := int64(MaxMetricsBytes)
	names := 0
	for _, r := range runs {
		var ms []Metric
		walkNamed(filepath.Join(r.dir, "metrics"), func(name, path string) {
			if names == maxMLflowMetricNames {
				d.Dropped++
				return
			}
			names++
			got, bad, err := readMLflowMetric(root, path, name, &budget)
			ms = append(ms, got...)
			d.Dropped += bad
			if err != nil {
				d.Warnings = append(d.Warnings, fmt.Sprintf("MLflow metric %s: %v", SanitizeText(name), err))
			}
		})
		// One run's history in the order it was logged (as far as MLflow's
		// millisecond timestamps tell: values of different metrics in the same
		// millisecond keep the metrics' name order).
		sort.SliceStable(ms, func(i, j int) bool { return ms[i].Time < ms[j].Time })
		d.Metrics = append(d.Metrics, ms...)
		for _, kind := range []struct {
			dir string
			kv  *KeyValues
		}{{"params", &d.Params}, {"tags", &d.Tags}} {
			walkNamed(filepath.Join(r.dir, kind.dir), func(name, path string) {
				if kind.dir == "tags" && strings.HasPrefix(name, "mlflow.") {
					return
				}
				b, err := readCut(root, path, MaxValueBytes)
				if err != nil {
					kind.kv.Dropped++
					return
				}
				kind.kv.Set(name, string(b))
			})
		}
		if art := filepath.Join(r.dir, "artifacts"); realDir(art) {
			d.ArtifactDirs = append(d.ArtifactDirs, art)
		}
	}
	return d, nil
}

// realDir reports whether p is a directory and not a link to one.
func realDir(p string) bool {
	st, err := os.Lstat(p)
	return err == nil && st.IsDir()
}

// walkNamed calls fn for every regular file under dir with its slash name
// relative to dir, in sorted order, never following a link to a directory.
func walkNamed(dir string, fn func(name, path string)) {
	var walk func(rel string, depth int)
	walk = func(rel string, depth int) {
		if depth > maxMLflowDepth {
			return
		}
		abs := filepath.Join(dir, filepath.FromSlash(rel))
		if !realDir(abs) {
			return
		}
		entries, err := os.ReadDir(abs)
		if err != nil {
			return
		}
		for _, e := range entries {
			name := e.Name()
			if rel != "" {
				name = rel + "/" + name
			}
			switch {
			case e.IsDir():
				walk(name, depth+1)
			case e.Type().IsRegular():
				fn(name, filepath.Join(dir, filepath.FromSlash(name)))
			}
		}
	}
	walk("", 0)
}

// readCut reads at most n bytes of a run file (MLflow values are short; a
// longer one is cut, not refused).
func readCut(root, path string, n int64) ([]byte, error) {
	f, err := OpenRunFile(root, path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}

// readMLflowMetric parses one metric file, charging what it reads to budget.
func readMLflowMetric(root, path, name string, budget *int64) ([]Metric, int, error) {
	if *budget <= 0 {
		return nil, 1, errors.New("the store's metrics are over the size bound; not read")
	}
	f, err := OpenRunFile(root, path)
	if err != nil {
		return nil, 1, err
	}
	defer f.Close()
	lr := &io.LimitedReader{R: f, N: *budget}
	br := bufio.NewReaderSize(lr, 64<<10)
	name = SanitizeText(name)
	var out []Metric
	bad := 0
	for {
		line, err := br.ReadSlice('\n')
		for errors.Is(err, bufio.ErrBufferFull) {
			bad++ // a line this long is no metric; skip to its end
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			line = nil
		}
		if m, ok := parseMLflowLine(bytes.TrimSpace(line), name); ok {
			out = append(out, m)
		} else if len(bytes.TrimSpace(line)) > 0 {
			bad++
		}
		if err != nil {
			*budget = lr.N
			if err == io.EOF {
				return out, bad, nil
			}
			return out, bad, err
		}
	}
}

// parseMLflowLine reads "<timestamp_ms> <value> [<step>]".
func parseMLflowLine(line []byte, name string) (Metric, bool) {
	fields := strings.Fields(string(line))
	if len(fields) < 2 || len(fields) > 3 {
		return Metric{}, false
	}
	ts, err1 := strconv.ParseInt(fields[0], 10, 64)
	v, err2 := strconv.ParseFloat(fields[1], 64)
	if err1 != nil || err2 != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return Metric{}, false
	}
	m := Metric{Name: name, Value: v, Time: float64(ts) / 1000}
	if len(fields) == 3 {
		if s, err := strconv.ParseFloat(fields[2], 64); err == nil && !math.IsNaN(s) && !math.IsInf(s, 0) {
			m.Step = &s
		}
	}
	return m, true
}

// parseRunMeta reads run_id, start_time and lifecycle_stage from a run's
// meta.yaml (flat "key: value" lines; no YAML library needed for these).
func parseRunMeta(b []byte) (id string, start int64, deleted bool) {
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.HasPrefix(line, " ") {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), `'"`)
		switch strings.TrimSpace(k) {
		case "run_id", "run_uuid":
			if id == "" {
				id = v
			}
		case "start_time":
			start, _ = strconv.ParseInt(v, 10, 64)
		case "lifecycle_stage":
			deleted = v == "deleted"
		}
	}
	return id, start, deleted
}
