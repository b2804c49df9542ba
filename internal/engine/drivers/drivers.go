// Package drivers is the contract every compute target kind implements, shaped
// after Nomad's task drivers: a Kind attaches and opens targets; a Driver probes
// its target, says what it can do, starts runs detached and recovers them from a
// serialized handle; an Execution is observed, canceled and collected.
//
// Each kind lives in a package of its own under drivers/ and registers itself
// once (see Register); no kind imports another. What kinds share on a host
// (staging a run directory, the supervisor, the run layout) is in hostrun;
// driverstest is the conformance suite every kind runs.
package drivers

import (
	"context"
	"encoding/json"
	"errors"
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
	// DockerVersion is the engine's version when Docker is usable;
	// DockerProblem says why it is not (no client, no engine, no permission).
	DockerVersion string `json:"docker_version,omitempty"`
	DockerProblem string `json:"docker_problem,omitempty"`
	// Filled by host probes of attached machines.
	PythonVersions []string `json:"python_versions,omitempty"`
	Home           string   `json:"home,omitempty"`
	PathEnv        string   `json:"path,omitempty"`
}

// Capabilities are what a target can run.
type Capabilities struct {
	// MaxNodes is the largest node_count a run may ask for (1: single-node).
	MaxNodes int
	// MaxNodesReason says where MaxNodes comes from, for error messages
	// ("pool \"cpu\" has max_nodes = 2"); empty for single-node kinds.
	MaxNodesReason string
	// Docker is whether runs can use environment.docker.
	Docker bool
	// GPUs is how many GPUs one node has.
	GPUs int
	// Frameworks are the run configuration frameworks the target runs
	// ("Python", "PySpark").
	Frameworks []string
	// PlanTimeEnvironment is whether PrepareEnvironment is local and cheap
	// (it contacts no host): the engine then also calls it at plan time, so
	// a missing interpreter is a plan error.
	PlanTimeEnvironment bool
}

// Program is what a run executes: a script of the snapshot run by the
// environment's interpreter, or a command as is, with arguments.
type Program struct {
	Script    string   `json:"script,omitempty"` // slash path relative to the run directory
	Command   []string `json:"command,omitempty"`
	Arguments []string `json:"arguments,omitempty"`
}

// SourceStreamer is a driver that reads a run's snapshot from the source
// directory as it sends it elsewhere (an SSH host), so that the engine stores
// the snapshot locally at the same time instead of first (RunSpec.SourceDir,
// RunSpec.Ready). StreamsSource reports whether it does, for this target.
type SourceStreamer interface {
	StreamsSource() bool
}

// RunSpec is everything a driver needs to start one run.
type RunSpec struct {
	RunID    string
	Manifest *snapshot.Manifest
	// Blobs is the engine's blob store: the source of the snapshot's files.
	Blobs snapshot.BlobStore
	// SourceDir and Ready are set only for a driver that implements
	// SourceStreamer: the engine stores the snapshot in Blobs while the
	// driver sends it, so the driver reads the files from SourceDir instead,
	// each verified against its manifest sha256 as it is read (a file that
	// no longer matches is an error wrapping snapshot.ErrSourceChanged).
	// Ready must then be called once, after the files have been sent and
	// before anything is launched: it returns when the engine has stored the
	// snapshot and recorded the run. When it fails, nothing may be launched,
	// and Start returns its error.
	SourceDir string
	Ready     func(context.Context) error
	Program   Program
	// Launch is how the target provides the environment, as PrepareEnvironment
	// answered: a user-managed interpreter, a system-managed environment built
	// before the script starts, or a Docker image.
	Launch env.Launch
	// Env holds the variables the run adds to the target's base environment
	// (the run configuration's, then the run's); the AML_* variables are the
	// host runtime's (supervise.RunVars).
	Env map[string]string
	// Experiment names the run's experiment (a Spark application is named
	// "<experiment>/<run id>").
	Experiment string
	// Framework is the run configuration's ("Python", "PySpark"), and
	// SparkConf its Spark configuration (--conf pairs).
	Framework string
	SparkConf map[string]string
	// Slurm is the run configuration's slurm block (per-run resources of a
	// batch job), as JSON; nil when it has none.
	Slurm json.RawMessage
	// NodeCount is the number of nodes (ranks) of a distributed run; 0 means 1.
	NodeCount   int
	MaxDuration time.Duration // zero: unlimited
	Grace       time.Duration // between SIGTERM and SIGKILL
}

// Nodes is NodeCount with 0 meaning 1.
func (s RunSpec) Nodes() int { return max(s.NodeCount, 1) }

// Handle is a driver's serialized reference to a started run; it is stored in the
// run record so any later process can Recover the execution. Its content is the
// driver's own (and versioned by it); the engine never looks inside.
type Handle = json.RawMessage

// State is one observation of a run (run.State: the run directory's
// supervisor writes it without importing the driver interface).
type State = run.State

// EnvInfo reports which environment a run used and what preparing it cost.
type EnvInfo = run.EnvInfo

// Collected is what a finished run leaves behind, as seen from the engine host.
// The engine records exactly this: OutputsPath and LogPath are where the
// outputs and the log are on the engine host (a remote driver brings them back
// first).
type Collected struct {
	Metrics []run.Metric `json:"metrics,omitempty"`
	// Params and Tags are what the script logged itself (MLflow params and
	// tags, Run.tag of azureml and aml_run), bounded (run.MaxKeyValues).
	Params      map[string]string `json:"params,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	OutputFiles []string          `json:"output_files,omitempty"` // slash paths relative to OutputsPath
	OutputsPath string            `json:"outputs_path,omitempty"`
	LogPath     string            `json:"log_path,omitempty"`
	LogTail     string            `json:"log_tail,omitempty"`
	// Traceback is the last Python traceback in the log, if the run failed
	// with one (it may have scrolled out of LogTail).
	Traceback string `json:"traceback,omitempty"`
	// Warnings say what could not be collected and why (the run's files are
	// written by its script: untrusted input); they go into the run's message.
	Warnings []string `json:"warnings,omitempty"`
}

// Driver is one compute target, opened by its Kind.
type Driver interface {
	// Probe describes the target (OS, cores, memory, GPUs, Python, Docker). A
	// target that cannot run anything is an error that names what is missing
	// and where it was looked for.
	Probe(ctx context.Context) (Facts, error)

	// Capabilities says what the target can run: how many nodes a run may use,
	// Docker, GPUs. It must not contact a remote host.
	Capabilities(ctx context.Context) (Capabilities, error)

	// PrepareEnvironment checks, before anything is written, that the target
	// can provide a run's environment, and says how (env.Launch). A fault in
	// the environment's definition is a *field.Error naming its attribute.
	PrepareEnvironment(ctx context.Context, e env.Environment) (env.Launch, error)

	// Start stages the run (snapshot, environment, the AML_* files) and
	// launches it detached: the run must survive the calling process exiting.
	// The handle it returns is kept in the run record.
	Start(ctx context.Context, spec RunSpec) (Handle, error)

	// Recover re-attaches to a started run from its handle, in any process
	// (a later provider process, the `aml` command). It must not contact a
	// remote host: the Execution does that when it is used.
	Recover(ctx context.Context, h Handle) (Execution, error)
}

// Execution is a started run.
type Execution interface {
	// Status observes the run once. A run whose supervisor is gone without a
	// result is Failed/lost. An error wrapping ErrUnreachable means the target
	// cannot be reached now and the run goes on there.
	Status(ctx context.Context) (State, error)
	// Wait blocks until the run is terminal or ctx ends; an unreachable
	// target does not end the wait.
	Wait(ctx context.Context) (State, error)
	// Logs returns log bytes from offset and the next offset (resumable).
	Logs(ctx context.Context, offset int64) ([]byte, int64, error)
	// Cancel sends SIGTERM to the run's process group and SIGKILL after
	// grace; reason becomes the run's failure_reason.
	Cancel(ctx context.Context, grace time.Duration, reason string) error
	// Collect gathers a terminal run's results onto the engine host: metrics,
	// the outputs listing, where outputs and log are, the log tail.
	Collect(ctx context.Context) (Collected, error)
}

// LogTailLines is how many lines of log a run record keeps for diagnostics.
const LogTailLines = 50

// ErrUnreachable marks errors after which a run is still fine on its target:
// the target cannot be reached now (a dropped link, a host that is down), the
// run goes on there and is observed again later. Drivers wrap their transport
// errors with Unreachable; the engine tests errors.Is(err, ErrUnreachable).
var ErrUnreachable = errors.New("compute target unreachable; the run goes on")

// Unreachable wraps err so that errors.Is(err, ErrUnreachable) holds; its
// message is err's.
func Unreachable(err error) error {
	if err == nil || errors.Is(err, ErrUnreachable) {
		return err
	}
	return unreachableError{err}
}

type unreachableError struct{ err error }

func (e unreachableError) Error() string        { return e.err.Error() }
func (e unreachableError) Unwrap() error        { return e.err }
func (e unreachableError) Is(target error) bool { return target == ErrUnreachable }

// IsUnreachable reports whether err means "unreachable, the run goes on".
func IsUnreachable(err error) bool { return errors.Is(err, ErrUnreachable) }

// WaitWoken observes a run until it is terminal or ctx ends, looking again
// whenever wake fires (a notification that the run's status was written) and
// every check besides (a supervisor that dies without writing is found by
// status). Unreachable errors do not end the wait.
func WaitWoken(ctx context.Context, wake <-chan struct{}, check time.Duration, status func(context.Context) (State, error)) (State, error) {
	t := time.NewTimer(check)
	defer t.Stop()
	return observe(ctx, status, func() <-chan struct{} {
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(check)
		return wake
	}, func() <-chan time.Time { return t.C })
}

// Poll observes a run until it is terminal or ctx ends: quickly at first, the
// interval growing by half up to most. Unreachable errors do not end the wait.
func Poll(ctx context.Context, first, most time.Duration, status func(context.Context) (State, error)) (State, error) {
	delay := first
	var tick <-chan time.Time
	return observe(ctx, status, func() <-chan struct{} {
		tick = time.After(delay)
		if delay < most {
			delay = min(delay*3/2, most)
		}
		return nil
	}, func() <-chan time.Time { return tick })
}

// observe is the loop of WaitWoken and Poll: look at the run, return at its end
// (or on an error that is not "unreachable"), else arm the next look (arm
// returns a wake channel, nil for none) and wait for it or for the timer.
func observe(ctx context.Context, status func(context.Context) (State, error), arm func() <-chan struct{}, timer func() <-chan time.Time) (State, error) {
	var last State
	for {
		st, err := status(ctx)
		switch {
		case err == nil:
			last = st
			if st.Status.Terminal() {
				return st, nil
			}
		case !IsUnreachable(err):
			return last, err
		}
		wake := arm()
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-wake:
		case <-timer():
		}
	}
}
