// Package target defines the contract every compute target kind implements (shaped
// after Nomad's task drivers): probe at attach time, start a run detached, recover
// it from a serialized handle, then observe, cancel and collect it.
package target

import (
	"context"
	"encoding/json"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

// Facts are what a probe learned about a target.
type Facts struct {
	Hostname    string `json:"hostname"`
	OS          string `json:"os"`
	Arch        string `json:"arch"`
	Cores       int    `json:"cores"`
	MemoryBytes int64  `json:"memory_bytes"`
	GPUs        int    `json:"gpus"`
	Python      string `json:"python"`
	Docker      bool   `json:"docker"`
	// Filled by host probes of attached machines.
	PythonVersions []string `json:"python_versions,omitempty"`
	Home           string   `json:"home,omitempty"`
	PathEnv        string   `json:"path,omitempty"`
}

// RunSpec is everything a driver needs to start one run.
type RunSpec struct {
	RunID    string
	Manifest *snapshot.Manifest
	Blobs    snapshot.BlobStore
	// Argv is the program and its arguments; Argv[0] is resolved for the target.
	Argv []string
	// Env holds the variables the run adds to the target's base environment.
	Env map[string]string
	// Environment, when set, is a system-managed environment the run's target
	// builds (or takes from its cache) before starting; Argv[0] is then replaced
	// by the environment's interpreter.
	Environment *env.Environment
	// NodeCount is the number of nodes (ranks) of a distributed run; 0 means 1.
	NodeCount   int
	MaxDuration time.Duration // zero: unlimited
	Grace       time.Duration // between SIGTERM and SIGKILL
}

// Handle is a driver's serialized reference to a started run; it is stored in the
// run record so any later process can Recover the execution.
type Handle = json.RawMessage

// State is one observation of a run.
type State struct {
	Status        run.Status `json:"status"`
	FailureReason string     `json:"failure_reason,omitempty"`
	ExitCode      *int       `json:"exit_code,omitempty"`
	Signal        string     `json:"signal,omitempty"`
	Message       string     `json:"message,omitempty"`
	StartTime     *time.Time `json:"start_time,omitempty"`
	EndTime       *time.Time `json:"end_time,omitempty"`
	Environment   *EnvInfo   `json:"environment,omitempty"`
	// NodeExitCodes holds every rank's exit code of a multi-node run.
	NodeExitCodes []int `json:"node_exit_codes,omitempty"`
}

// EnvInfo reports which environment a run used and what preparing it cost.
type EnvInfo struct {
	Key          string  `json:"key"`
	CacheHit     bool    `json:"cache_hit"`
	BuildSeconds float64 `json:"build_seconds"`
	Builder      string  `json:"builder,omitempty"`
}

// Collected is what a finished run leaves behind, as seen from the engine host.
type Collected struct {
	Metrics     []run.Metric
	OutputFiles []string // slash paths relative to OutputsPath
	OutputsPath string
	LogPath     string
	LogTail     string
}

// Driver is one compute target kind.
type Driver interface {
	Probe(ctx context.Context) (Facts, error)
	Start(ctx context.Context, spec RunSpec) (Handle, error)
	Recover(ctx context.Context, h Handle) (Execution, error)
}

// Execution is a started run.
type Execution interface {
	Status(ctx context.Context) (State, error)
	// Wait blocks until the run is terminal or ctx ends.
	Wait(ctx context.Context) (State, error)
	// Logs returns log bytes from offset and the next offset (resumable).
	Logs(ctx context.Context, offset int64) ([]byte, int64, error)
	// Cancel sends SIGTERM to the run's process group and SIGKILL after grace.
	Cancel(ctx context.Context, grace time.Duration, reason string) error
	Collect(ctx context.Context) (Collected, error)
}

// LogTailLines is how many lines of log a run record keeps for diagnostics.
const LogTailLines = 50

// Poll observes a run until it is terminal or ctx ends: quickly at first, the
// interval growing by half up to most. Errors for which transient is true (a
// dropped connection: the run goes on) do not end the wait.
func Poll(ctx context.Context, first, most time.Duration, status func(context.Context) (State, error), transient func(error) bool) (State, error) {
	delay := first
	var last State
	for {
		st, err := status(ctx)
		switch {
		case err == nil:
			last = st
			if st.Status.Terminal() {
				return st, nil
			}
		case transient == nil || !transient(err):
			return last, err
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(delay):
		}
		if delay < most {
			delay = min(delay*3/2, most)
		}
	}
}
