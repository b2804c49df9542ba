package run

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"time"
)

// Record is one run as the workspace store keeps it.
type Record struct {
	ID            string
	Experiment    string
	Target        string
	RunConfig     string // run configuration name
	SubmitKey     string
	Status        Status
	FailureReason string
	ExitCode      *int
	NodeExitCodes []int
	Error         string // a short human message for setup failures
	CreatedAt     time.Time
	StartTime     *time.Time
	EndTime       *time.Time
	SnapshotHash  string
	SnapshotFiles int
	SnapshotBytes int64
	Handle        json.RawMessage
	Metrics       map[string]float64
	OutputFiles   []string
	LogTail       string
	RunDir        string
	// OutputsPath and LogPath are where the collected outputs and log are on
	// the engine host (as the driver's Collect said).
	OutputsPath     string `json:",omitempty"`
	LogPath         string `json:",omitempty"`
	Tags            map[string]string
	EnvironmentHash string
	// Set once a system-managed environment is ready: EnvironmentHash then is the
	// environment's cache key (definition + platform).
	EnvironmentCacheHit     *bool
	EnvironmentBuildSeconds *float64
	EnvironmentBuilder      string
	// Pool is the run-based pool created for this run (compute_target
	// "amlcompute"); it is deleted once the run has ended.
	Pool string
	// The submission as configured, so a run can be imported into Terraform.
	SourceDirectory      string
	Script               string
	Command              []string
	Arguments            []string
	EnvironmentVariables map[string]string
	Triggers             map[string]string
}

// DurationSeconds is the wall time between start and end (or now while running).
func (r *Record) DurationSeconds(now time.Time) float64 {
	if r.StartTime == nil {
		return 0
	}
	end := now
	if r.EndTime != nil {
		end = *r.EndTime
	}
	return math.Round(end.Sub(*r.StartTime).Seconds()*1000) / 1000
}

// Metric is one line of AML_METRICS_FILE.
type Metric struct {
	Name  string   `json:"name"`
	Value float64  `json:"value"`
	Step  *float64 `json:"step,omitempty"`
}

// ParseMetrics reads JSON lines and returns every well-formed metric in order plus
// the number of lines it could not use (malformed lines never fail a run).
func ParseMetrics(r io.Reader) ([]Metric, int, error) {
	var out []Metric
	bad := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var m Metric
		if err := json.Unmarshal(line, &m); err != nil || m.Name == "" || math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
			bad++
			continue
		}
		out = append(out, m)
	}
	return out, bad, sc.Err()
}

// LastValues maps each metric name to its last logged value.
func LastValues(ms []Metric) map[string]float64 {
	last := make(map[string]float64, len(ms))
	for _, m := range ms {
		last[m.Name] = m.Value
	}
	return last
}

// ReadMetricsFile parses a metrics file; a missing file means no metrics.
func ReadMetricsFile(path string) ([]Metric, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ms, _, err := ParseMetrics(f)
	if err != nil {
		return nil, fmt.Errorf("reading metrics %s: %w", path, err)
	}
	return ms, nil
}

// TailLines returns the last n lines of a file, reading at most maxBytes from its end.
func TailLines(path string, n int, maxBytes int64) (string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := st.Size() - maxBytes
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return "", err
	}
	return tail(buf, n, off > 0), nil
}

func tail(buf []byte, n int, truncated bool) string {
	buf = bytes.TrimRight(buf, "\n")
	lines := bytes.Split(buf, []byte("\n"))
	if truncated && len(lines) > 1 {
		lines = lines[1:] // first line is probably partial
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && len(lines[0]) == 0 {
		return ""
	}
	return string(bytes.ToValidUTF8(bytes.Join(lines, []byte("\n")), []byte("\uFFFD"))) + "\n"
}

// SortedKeys returns a map's keys in order (for deterministic output).
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
