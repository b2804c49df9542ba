// Package hostrun is what the drivers share on a host that runs a run as a
// process tree: the run directory layout, staging it from the blob store, the
// detached supervisor (`agent supervise`) that owns the script, reading its
// state, and the process helpers. The local driver uses it on the engine host,
// pool nodes on theirs, and the SSH host agent on an attached machine.
package supervise

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// Paths inside a run directory. The run's working directory is the run directory
// itself (the materialized snapshot), as in Azure ML.
const (
	OutputsDir = "outputs"
	LogsDir    = "logs"
	// ControlDir holds the engine's files: snapshot.ReservedDir, which no
	// snapshot contains (a test holds the two equal; the supervisor does not
	// link the snapshot package, whose initialisation every run would pay).
	ControlDir  = ".aml"
	StdLogFile  = "std_log.txt"
	metricsFile = "metrics.jsonl"
	tagsFile    = "tags.jsonl"
	mlflowDir   = "mlruns"
	specFile    = "spec.json"
	statusFile  = "status.json"
	cancelFile  = "cancel.json"
	helperFile  = "lib.zip"
)

// Layout names the files of one run directory. Rank is a rank of a
// multi-node run whose ranks all share the run directory (a Slurm job): rank 0
// uses the run's own status, log and metrics; rank n > 0 its own under
// .aml/ranks/<n> and logs/rank-<n>.txt.
type Layout struct {
	Dir  string
	Rank int
}

func (l Layout) Outputs() string { return filepath.Join(l.Dir, OutputsDir) }
func (l Layout) Logs() string    { return filepath.Join(l.Dir, LogsDir) }
func (l Layout) StdLog() string {
	if l.Rank > 0 {
		return filepath.Join(l.Dir, LogsDir, fmt.Sprintf("rank-%d.txt", l.Rank))
	}
	return filepath.Join(l.Dir, LogsDir, StdLogFile)
}
func (l Layout) Control() string { return filepath.Join(l.Dir, ControlDir) }
func (l Layout) Metrics() string { return filepath.Join(l.rankDir(), metricsFile) }
func (l Layout) Tags() string    { return filepath.Join(l.rankDir(), tagsFile) }

// MLflowStore is the MLflow file store a run is given (MLFLOW_TRACKING_URI)
// when its environment names none.
func (l Layout) MLflowStore() string { return filepath.Join(l.rankDir(), mlflowDir) }
func (l Layout) Spec() string        { return filepath.Join(l.Dir, ControlDir, specFile) }
func (l Layout) Status() string      { return filepath.Join(l.rankDir(), statusFile) }
func (l Layout) CancelReq() string   { return filepath.Join(l.rankDir(), cancelFile) }

// rankDir holds a rank's control files: the control directory for rank 0.
func (l Layout) rankDir() string {
	if l.Rank > 0 {
		return filepath.Join(l.Dir, ControlDir, "ranks", fmt.Sprint(l.Rank))
	}
	return filepath.Join(l.Dir, ControlDir)
}
func (l Layout) HelperLib() string   { return filepath.Join(l.Dir, ControlDir, helperFile) }
func (l Layout) EnvBuildLog() string { return filepath.Join(l.Dir, LogsDir, "environment_build.log") }
func (l Layout) SupervisorLog() string {
	if l.Rank > 0 {
		return filepath.Join(l.rankDir(), "supervisor.log")
	}
	return filepath.Join(l.Dir, ControlDir, "supervisor.log")
}

// SupervisorSpec is what the supervisor reads at start. It holds only what the
// run declares: the environment the run inherits (the provider's, which may
// carry secrets never named in the configuration) is the supervisor's own,
// passed at start and never written down.
type SupervisorSpec struct {
	RunID      string   `json:"run_id"`
	Experiment string   `json:"experiment,omitempty"`
	Argv       []string `json:"argv"`
	// Vars are the run's declared variables; RunVars the host runtime's
	// (AML_*); HelperLib goes first on PYTHONPATH.
	Vars           map[string]string `json:"vars,omitempty"`
	RunVars        map[string]string `json:"run_vars"`
	HelperLib      string            `json:"helper_lib"`
	MaxDurationSec float64           `json:"max_duration_seconds,omitempty"`
	GraceSec       float64           `json:"grace_seconds"`
	// Environment is built (or found in the cache) before the script starts.
	Environment *EnvironmentSpec  `json:"environment,omitempty"`
	Extra       map[string]string `json:"extra,omitempty"`
	// Container, when set, runs the program in Docker (Argv is then unused).
	Container *ContainerSpec `json:"container,omitempty"`
}

// EnvironmentSpec tells the supervisor which system-managed environment to prepare.
type EnvironmentSpec struct {
	Definition    env.Environment `json:"definition"`
	CacheRoot     string          `json:"cache_root"`
	CacheMaxBytes int64           `json:"cache_max_bytes,omitempty"`
	PathEnv       string          `json:"path_env"`
}

// SupervisorStatus is the supervisor's running account of the run, rewritten
// atomically at every change.
type SupervisorStatus struct {
	run.State
	SupervisorPID   int    `json:"supervisor_pid"`
	SupervisorTicks uint64 `json:"supervisor_ticks"`
	ChildPID        int    `json:"child_pid,omitempty"`
	// Container is the run's container, for Docker runs.
	Container string `json:"container,omitempty"`
}

// CancelRequest is written before the supervisor is signalled.
type CancelRequest struct {
	GraceSec float64   `json:"grace_seconds"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

func WriteJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.tmp-%d", path, os.Getpid())
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// maxControlFile bounds the engine's own files in a run directory; the script
// can replace them, so they are read as untrusted (run.ReadRunFile).
const maxControlFile = 4 << 20

// readJSON reads one of the run directory's control files.
func (l Layout) readJSON(path string, v any) error {
	b, err := run.ReadRunFile(l.Dir, path, maxControlFile)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func ReadStatus(l Layout) (*SupervisorStatus, error) {
	var st SupervisorStatus
	if err := l.readJSON(l.Status(), &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return &st, nil
}
