package hostrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

// StageRequest is everything a host needs to prepare one run directory. It is
// JSON so that a remote agent can take it on stdin.
type StageRequest struct {
	RunID          string             `json:"run_id"`
	Experiment     string             `json:"experiment,omitempty"`
	RunDir         string             `json:"run_dir"`
	Manifest       *snapshot.Manifest `json:"manifest"`
	BlobsRoot      string             `json:"blobs_root"`
	Program        drivers.Program    `json:"program"`
	Launch         env.Launch         `json:"launch"`
	Env            map[string]string  `json:"env"`
	EnvRoot        string             `json:"env_root"`
	EnvCacheBytes  int64              `json:"env_cache_bytes,omitempty"`
	MaxDurationSec float64            `json:"max_duration_seconds,omitempty"`
	GraceSec       float64            `json:"grace_seconds"`
	// SpareRoot, when set, is where spare trees of earlier snapshots are kept
	// on this host (see snapshot.BlobStore.MaterializeFromSpare): the run
	// directory is then patched from one when there is one.
	SpareRoot string `json:"spare_root,omitempty"`
	// Materialized says RunDir exists and holds the snapshot already (the
	// host wrote it as the blobs arrived); Stage adds the rest. It is the
	// host's own business, never sent.
	Materialized bool `json:"-"`
}

// NewStageRequest fills a StageRequest from a driver's RunSpec; the caller sets
// where things live on the host (RunDir, BlobsRoot, EnvRoot, EnvCacheBytes).
func NewStageRequest(spec drivers.RunSpec, runDir string) StageRequest {
	return StageRequest{
		RunID:          spec.RunID,
		Experiment:     spec.Experiment,
		RunDir:         runDir,
		Manifest:       spec.Manifest,
		BlobsRoot:      spec.Blobs.Root,
		Program:        spec.Program,
		Launch:         spec.Launch,
		Env:            spec.Env,
		MaxDurationSec: spec.MaxDuration.Seconds(),
		GraceSec:       spec.Grace.Seconds(),
	}
}

// Command is the program a run executes in run directory l. For a
// system-managed environment the interpreter is left empty: the supervisor
// fills it in once the environment is ready. For Docker runs it is the program
// inside the container (the supervisor's spec says which container).
func Command(runID, experiment string, l supervise.Layout, p drivers.Program, launch env.Launch, vars map[string]string) []string {
	var prog []string
	if p.Script != "" {
		prog = append([]string{filepath.FromSlash(p.Script)}, p.Arguments...)
	} else {
		prog = append(append([]string{}, p.Command...), p.Arguments...)
	}
	switch {
	case launch.Docker != nil && p.Script != "":
		if launch.System != nil {
			return append([]string{""}, prog...) // the built image's python
		}
		return append([]string{launch.Interpreter}, prog...)
	case p.Script == "":
		return prog
	default:
		return append([]string{launch.Interpreter}, prog...)
	}
}

// Stage materializes the snapshot from the host's blob store into the run
// directory and writes the supervisor's spec, an initial status and the aml_run
// helper. The run's base environment is this host's.
func Stage(ctx context.Context, req StageRequest) (err error) {
	l := supervise.Layout{Dir: req.RunDir}
	if _, err := os.Stat(l.Dir); err == nil && !req.Materialized {
		return fmt.Errorf("run directory %s already exists", l.Dir)
	}
	// A half-staged directory (a full disk, say) must never look like a run.
	defer func() {
		if err != nil {
			_ = os.RemoveAll(l.Dir)
		}
	}()
	blobs := snapshot.BlobStore{Root: req.BlobsRoot}
	switch {
	case req.Materialized:
	case req.SpareRoot != "":
		_, err = blobs.MaterializeFromSpare(ctx, req.Manifest, l.Dir, req.SpareRoot)
	default:
		err = blobs.Materialize(ctx, req.Manifest, l.Dir)
	}
	if err != nil {
		return fmt.Errorf("staging snapshot: %w", err)
	}
	for _, dir := range []string{l.Outputs(), l.Logs(), l.Control()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("staging run directory: %w", err)
		}
	}
	if err := WriteHelpers(l.HelperLib()); err != nil {
		return fmt.Errorf("staging run directory: %w", err)
	}
	// The control directory holds the run's spec: the owner's alone.
	if err := os.Chmod(l.Control(), 0o700); err != nil {
		return err
	}
	sspec := supervise.SupervisorSpec{
		RunID:          req.RunID,
		Experiment:     req.Experiment,
		Argv:           Command(req.RunID, req.Experiment, l, req.Program, req.Launch, req.Env),
		Vars:           req.Env,
		RunVars:        supervise.RunVarsFor(req.RunID, req.Experiment, l),
		HelperLib:      l.HelperLib(),
		MaxDurationSec: req.MaxDurationSec,
		GraceSec:       req.GraceSec,
	}
	if d := req.Launch.Docker; d != nil {
		if err := supervise.PullIfPrivate(ctx, d); err != nil {
			return err
		}
		sspec.Container = supervise.NewContainerSpec(req.RunID, req.Experiment, l, sspec.Argv, req.Launch, req.Env, req.EnvRoot)
	} else if sys := req.Launch.System; sys != nil {
		sspec.Environment = &supervise.EnvironmentSpec{Definition: *sys, CacheRoot: req.EnvRoot, CacheMaxBytes: req.EnvCacheBytes, PathEnv: os.Getenv("PATH")}
	}
	if err := supervise.WriteJSONAtomic(l.Spec(), sspec); err != nil {
		return err
	}
	return supervise.WriteJSONAtomic(l.Status(), supervise.SupervisorStatus{State: drivers.State{Status: run.Starting}})
}

// Launch starts `agent supervise <runDir>` detached: its own session, stdin from
// /dev/null, stdout and stderr on a file, so it outlives this process and never
// holds the plugin protocol's pipes. It returns the run's handle.
func Launch(agentCommand []string, runDir string) (drivers.Handle, error) {
	l := supervise.Layout{Dir: runDir}
	slog, err := os.OpenFile(l.SupervisorLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer slog.Close()
	if len(agentCommand) == 0 {
		return nil, errors.New("no agent command configured")
	}
	sup := supervise.Command(agentCommand)
	cmd := exec.Command(sup[0], AgentArgs(sup, "supervise", l.Dir)...)
	cmd.Dir = l.Dir
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = slog, slog
	cmd.Env = append(os.Environ(), "AML_AGENT=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting run supervisor: %w", err)
	}
	h := handle{RunDir: l.Dir, SupervisorPID: cmd.Process.Pid}
	h.SupervisorTicks, _, _ = supervise.ProcStart(cmd.Process.Pid)
	// Reap the supervisor if it ends while we are alive; once we exit, init does.
	go func() { _ = cmd.Wait() }()
	return json.Marshal(h)
}

// AgentArgs is the argument list (after the program) of an agent subcommand.
func AgentArgs(agentCommand []string, sub ...string) []string {
	return append(append([]string{}, agentCommand[1:]...), sub...)
}
