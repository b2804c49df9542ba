package run

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"time"
)

// Record is one run as the workspace store keeps it.
type Record struct {
	ID         string
	Experiment string
	Target     string
	RunConfig  string // run configuration name
	SubmitKey  string
	// Submission identifies what a plan compares a new run with: the same
	// experiment, source directory, program, target, configuration and inputs,
	// whatever the snapshot (empty in records of earlier versions).
	Submission    string `json:",omitempty"`
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
	// ManifestBlob is the blob holding the snapshot's manifest (its file
	// list), so a later plan can say which files changed.
	ManifestBlob string `json:",omitempty"`
	Handle       json.RawMessage
	// Host is the machine whose engine started the run: on a shared
	// workspace only it observes the run while it is active.
	Host        string `json:",omitempty"`
	Metrics     map[string]float64
	OutputFiles []string
	LogTail     string
	RunDir      string
	// OutputsPath and LogPath are where the collected outputs and log are on
	// the engine host (as the driver's Collect said).
	OutputsPath string `json:",omitempty"`
	LogPath     string `json:",omitempty"`
	// Traceback is the last Python traceback of a failed run's log.
	Traceback string `json:",omitempty"`
	// Details are what the target's kind knows of the run (e.g.
	// spark_application_id, slurm_job_id).
	Details map[string]string `json:",omitempty"`
	Tags    map[string]string
	// Params and ScriptTags are what the script logged itself (MLflow
	// params and tags, azureml's Run.tag), bounded (see MaxKeyValues).
	Params          map[string]string `json:",omitempty"`
	ScriptTags      map[string]string `json:",omitempty"`
	EnvironmentHash string
	// Set once a system-managed environment is ready: EnvironmentHash then is the
	// environment's cache key (definition + platform).
	EnvironmentCacheHit     *bool
	EnvironmentBuildSeconds *float64
	EnvironmentBuilder      string
	// Phases is when the run entered each status (as its host saw it, or the
	// engine when the host does not say).
	Phases map[Status]time.Time `json:",omitempty"`
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

// Metric is one line of AML_METRICS_FILE. Time is when it was logged (Unix
// seconds), 0 when the line did not say.
type Metric struct {
	Name  string   `json:"name"`
	Value float64  `json:"value"`
	Step  *float64 `json:"step,omitempty"`
	Time  float64  `json:"time,omitempty"`
}

// Bounds on what a metrics file may hold: a longer line is dropped, and reading
// stops after MaxMetricsBytes (the rest is dropped and counted as one).
const (
	MaxMetricLineBytes = 1 << 20
	MaxMetricsBytes    = 256 << 20
)

// ParseMetrics reads JSON lines and returns every well-formed metric in order plus
// the number of lines it could not use: malformed, too long, without a name, or
// whose value is null, not a number, NaN or infinite. Bad lines never fail a run.
func ParseMetrics(r io.Reader) ([]Metric, int, error) {
	var out []Metric
	bad := 0
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		tooLong := false
		line = append(line[:0], chunk...)
		for errors.Is(err, bufio.ErrBufferFull) {
			chunk, err = br.ReadSlice('\n')
			if !tooLong && len(line)+len(chunk) <= MaxMetricLineBytes {
				line = append(line, chunk...)
			} else {
				tooLong, line = true, line[:0]
			}
		}
		if err != nil && err != io.EOF {
			return out, bad, err
		}
		switch trimmed := bytes.TrimSpace(line); {
		case tooLong:
			bad++
		case len(trimmed) == 0:
		default:
			if m, ok := parseMetric(trimmed); ok {
				out = append(out, m)
			} else {
				bad++
			}
		}
		if err == io.EOF {
			return out, bad, nil
		}
	}
}

func parseMetric(line []byte) (Metric, bool) {
	var raw struct {
		Name  string   `json:"name"`
		Value *float64 `json:"value"`
		Step  *float64 `json:"step"`
		Time  *float64 `json:"time"`
	}
	if err := json.Unmarshal(line, &raw); err != nil || raw.Name == "" || raw.Value == nil || math.IsNaN(*raw.Value) || math.IsInf(*raw.Value, 0) {
		return Metric{}, false
	}
	if raw.Step != nil && (math.IsNaN(*raw.Step) || math.IsInf(*raw.Step, 0)) {
		raw.Step = nil
	}
	m := Metric{Name: SanitizeText(raw.Name), Value: *raw.Value, Step: raw.Step}
	if raw.Time != nil && !math.IsNaN(*raw.Time) && !math.IsInf(*raw.Time, 0) && *raw.Time > 0 {
		m.Time = *raw.Time
	}
	return m, true
}

// LastValues maps each metric name to its last logged value.
func LastValues(ms []Metric) map[string]float64 {
	last := make(map[string]float64, len(ms))
	for _, m := range ms {
		last[m.Name] = m.Value
	}
	return last
}

// ReadMetricsFile parses a run's metrics file (inside root, see OpenRunFile);
// a missing file means no metrics. dropped counts the lines it could not use.
func ReadMetricsFile(root, path string) (ms []Metric, dropped int, err error) {
	f, err := OpenRunFile(root, path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	lr := &io.LimitedReader{R: f, N: MaxMetricsBytes}
	ms, dropped, err = ParseMetrics(lr)
	if err != nil {
		return ms, dropped, fmt.Errorf("reading metrics %s: %w", path, err)
	}
	if lr.N == 0 {
		if n, _ := f.Read(make([]byte, 1)); n > 0 {
			dropped++ // what lies past the bound
		}
	}
	return ms, dropped, nil
}

// TailLines returns the last n lines of a run file (inside root, see
// OpenRunFile), reading at most maxBytes from its end.
func TailLines(root, path string, n int, maxBytes int64) (string, error) {
	f, err := OpenRunFile(root, path)
	if errors.Is(err, os.ErrNotExist) {
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
	n2, err := f.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return "", err
	}
	return tail(buf[:n2], n, off > 0), nil
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
