package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/engine/target"
)

// Driver runs on the engine host. RunsRoot is the workspace's runs directory;
// AgentCommand is how to start this program's agent (e.g. [exe, "agent"]).
type Driver struct {
	RunsRoot      string
	EnvRoot       string // cache of system-managed environments
	EnvCacheBytes int64
	AgentCommand  []string
}

var _ target.Driver = (*Driver)(nil)

// handle is the local driver's serialized run reference.
type handle struct {
	RunDir          string `json:"run_dir"`
	SupervisorPID   int    `json:"supervisor_pid"`
	SupervisorTicks uint64 `json:"supervisor_ticks"`
}

// Probe describes this machine.
func (d *Driver) Probe(ctx context.Context) (target.Facts, error) {
	host, _ := os.Hostname()
	f := target.Facts{Hostname: host, OS: runtime.GOOS, Arch: runtime.GOARCH, Cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			f.MemoryBytes = kb * 1024
		}
	}
	if out, err := exec.CommandContext(ctx, "python3", "--version").Output(); err == nil {
		f.Python = strings.TrimSpace(strings.TrimPrefix(string(out), "Python "))
	}
	f.GPUs = countGPUs(ctx)
	return f, nil
}

// countGPUs asks nvidia-smi; without it the machine has none we can use.
func countGPUs(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nvidia-smi", "-L").Output()
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "GPU ") {
			n++
		}
	}
	return n
}

// Start stages the run directory and launches its supervisor detached.
func (d *Driver) Start(ctx context.Context, spec target.RunSpec) (target.Handle, error) {
	req := StageRequest{
		RunID:          spec.RunID,
		RunDir:         filepath.Join(d.RunsRoot, spec.RunID),
		Manifest:       spec.Manifest,
		BlobsRoot:      spec.Blobs.Root,
		Argv:           spec.Argv,
		Env:            spec.Env,
		Environment:    spec.Environment,
		EnvRoot:        d.EnvRoot,
		EnvCacheBytes:  d.EnvCacheBytes,
		MaxDurationSec: spec.MaxDuration.Seconds(),
		GraceSec:       spec.Grace.Seconds(),
	}
	if err := Stage(ctx, req); err != nil {
		return nil, err
	}
	return Launch(d.AgentCommand, req.RunDir)
}

// StageRequest is everything a host needs to prepare one run directory. It is
// JSON so that a remote agent can take it on stdin.
type StageRequest struct {
	RunID          string             `json:"run_id"`
	RunDir         string             `json:"run_dir"`
	Manifest       *snapshot.Manifest `json:"manifest"`
	BlobsRoot      string             `json:"blobs_root"`
	Argv           []string           `json:"argv"`
	Env            map[string]string  `json:"env"`
	Environment    *env.Environment   `json:"environment,omitempty"`
	EnvRoot        string             `json:"env_root"`
	EnvCacheBytes  int64              `json:"env_cache_bytes,omitempty"`
	MaxDurationSec float64            `json:"max_duration_seconds,omitempty"`
	GraceSec       float64            `json:"grace_seconds"`
}

// Stage materializes the snapshot from the host's blob store into the run
// directory and writes the supervisor's spec, an initial status and the aml_run
// helper. The run's base environment is this host's.
func Stage(ctx context.Context, req StageRequest) (err error) {
	l := Layout{Dir: req.RunDir}
	if _, err := os.Stat(l.Dir); err == nil {
		return fmt.Errorf("run directory %s already exists", l.Dir)
	}
	// A half-staged directory (a full disk, say) must never look like a run.
	defer func() {
		if err != nil {
			_ = os.RemoveAll(l.Dir)
		}
	}()
	blobs := snapshot.BlobStore{Root: req.BlobsRoot}
	if err := blobs.Materialize(ctx, req.Manifest, l.Dir); err != nil {
		return fmt.Errorf("staging snapshot: %w", err)
	}
	for _, dir := range []string{l.Outputs(), l.Logs(), l.HelperLib()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("staging run directory: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(l.HelperLib(), "aml_run.py"), []byte(helperPy), 0o644); err != nil {
		return err
	}
	runEnv := RunEnvironment(os.Environ(), req.Env, map[string]string{
		"AML_RUN_ID":       req.RunID,
		"AML_OUTPUTS_DIR":  l.Outputs(),
		"AML_LOGS_DIR":     l.Logs(),
		"AML_METRICS_FILE": l.Metrics(),
		"PYTHONUNBUFFERED": "1",
	}, l.HelperLib())
	sspec := SupervisorSpec{
		RunID:          req.RunID,
		Argv:           req.Argv,
		Env:            runEnv,
		MaxDurationSec: req.MaxDurationSec,
		GraceSec:       req.GraceSec,
	}
	if req.Environment != nil {
		sspec.Environment = &EnvironmentSpec{Definition: *req.Environment, CacheRoot: req.EnvRoot, CacheMaxBytes: req.EnvCacheBytes, PathEnv: os.Getenv("PATH")}
	}
	if err := writeJSONAtomic(l.Spec(), sspec); err != nil {
		return err
	}
	return writeJSONAtomic(l.Status(), SupervisorStatus{State: target.State{Status: run.Starting}})
}

// Launch starts `agent supervise <runDir>` detached: its own session, stdin from
// /dev/null, stdout and stderr on a file, so it outlives this process and never
// holds the plugin protocol's pipes. It returns the run's handle.
func Launch(agentCommand []string, runDir string) (target.Handle, error) {
	l := Layout{Dir: runDir}
	slog, err := os.OpenFile(l.SupervisorLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer slog.Close()
	if len(agentCommand) == 0 {
		return nil, errors.New("no agent command configured")
	}
	args := append(append([]string{}, agentCommand[1:]...), "supervise", l.Dir)
	cmd := exec.Command(agentCommand[0], args...)
	cmd.Dir = l.Dir
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = slog, slog
	cmd.Env = append(os.Environ(), "AML_AGENT=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting run supervisor: %w", err)
	}
	h := handle{RunDir: l.Dir, SupervisorPID: cmd.Process.Pid}
	h.SupervisorTicks, _, _ = procStart(cmd.Process.Pid)
	// Reap the supervisor if it ends while we are alive; once we exit, init does.
	go func() { _ = cmd.Wait() }()
	return json.Marshal(h)
}

// RunEnvironment builds a run's environment: the base (minus the plugin protocol's
// variables), then the user's variables, then the engine's, with helperLib first on
// PYTHONPATH.
func RunEnvironment(base []string, user, engine map[string]string, helperLib string) []string {
	m := map[string]string{}
	for _, kv := range base {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || isPluginVar(k) {
			continue
		}
		m[k] = v
	}
	for k, v := range user {
		m[k] = v
	}
	for k, v := range engine {
		m[k] = v
	}
	if helperLib != "" {
		if pp := m["PYTHONPATH"]; pp != "" {
			m["PYTHONPATH"] = helperLib + string(os.PathListSeparator) + pp
		} else {
			m["PYTHONPATH"] = helperLib
		}
	}
	out := make([]string, 0, len(m))
	for _, k := range run.SortedKeys(m) {
		out = append(out, k+"="+m[k])
	}
	return out
}

func isPluginVar(k string) bool {
	return k == "TF_PLUGIN_MAGIC_COOKIE" || k == "TF_REATTACH_PROVIDERS" || strings.HasPrefix(k, "PLUGIN_") || k == "AML_AGENT"
}

// Recover re-attaches to a run from its handle.
func (d *Driver) Recover(ctx context.Context, raw target.Handle) (target.Execution, error) {
	var h handle
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("local run handle: %w", err)
	}
	if h.RunDir == "" {
		return nil, errors.New("local run handle has no run directory")
	}
	return &execution{h: h, l: Layout{Dir: h.RunDir}}, nil
}

type execution struct {
	h handle
	l Layout
}

// Status reads the supervisor's status file; a supervisor that died without
// recording an end makes the run Failed/lost (its group is killed first).
func (e *execution) Status(ctx context.Context) (target.State, error) {
	st, err := readStatus(e.l)
	if err != nil {
		return target.State{}, err
	}
	if st == nil {
		return target.State{Status: run.Failed, FailureReason: run.ReasonLost, Message: "run directory has no status; it was removed or never started"}, nil
	}
	if st.Status.Terminal() {
		return st.State, nil
	}
	pid, ticks := e.h.SupervisorPID, e.h.SupervisorTicks
	if st.SupervisorPID != 0 {
		pid, ticks = st.SupervisorPID, st.SupervisorTicks
	}
	if processAlive(pid, ticks) {
		return st.State, nil
	}
	// Re-read: the supervisor may have finished between the two reads.
	if again, err := readStatus(e.l); err == nil && again != nil && again.Status.Terminal() {
		return again.State, nil
	}
	if st.ChildPID > 0 {
		_ = killGroup(st.ChildPID, syscall.SIGKILL)
	}
	now := time.Now().UTC()
	st.Status, st.FailureReason, st.EndTime = run.Failed, run.ReasonLost, &now
	st.Message = fmt.Sprintf("the run's supervisor (pid %d) is gone without recording a result", pid)
	_ = writeJSONAtomic(e.l.Status(), st)
	return st.State, nil
}

// Wait polls the status file, quickly at first, then every half second.
func (e *execution) Wait(ctx context.Context) (target.State, error) {
	return target.Poll(ctx, 20*time.Millisecond, 500*time.Millisecond, e.Status, nil)
}

func (e *execution) Logs(ctx context.Context, offset int64) ([]byte, int64, error) {
	f, err := os.Open(e.l.StdLog())
	if errors.Is(err, os.ErrNotExist) {
		return nil, offset, nil
	}
	if err != nil {
		return nil, offset, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, offset, err
	}
	b, err := io.ReadAll(io.LimitReader(f, 4<<20))
	return b, offset + int64(len(b)), err
}

// Cancel asks the supervisor to stop the run; if the supervisor is gone it stops
// the group itself.
func (e *execution) Cancel(ctx context.Context, grace time.Duration, reason string) error {
	st, err := readStatus(e.l)
	if err != nil || st == nil || st.Status.Terminal() {
		return err
	}
	if err := writeJSONAtomic(e.l.CancelReq(), CancelRequest{GraceSec: grace.Seconds(), Reason: reason, At: time.Now().UTC()}); err != nil {
		return err
	}
	pid, ticks := st.SupervisorPID, st.SupervisorTicks
	if pid == 0 {
		pid, ticks = e.h.SupervisorPID, e.h.SupervisorTicks
	}
	if processAlive(pid, ticks) {
		return syscall.Kill(pid, syscall.SIGTERM)
	}
	if st.ChildPID > 0 {
		_ = killGroup(st.ChildPID, syscall.SIGTERM)
		deadline := time.Now().Add(grace)
		for groupAlive(st.ChildPID) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		_ = killGroup(st.ChildPID, syscall.SIGKILL)
	}
	now := time.Now().UTC()
	st.Status, st.FailureReason, st.EndTime = run.Canceled, reason, &now
	return writeJSONAtomic(e.l.Status(), st)
}

// Collect reads metrics, the output listing and the log tail.
func (e *execution) Collect(ctx context.Context) (target.Collected, error) {
	c := target.Collected{OutputsPath: e.l.Outputs(), LogPath: e.l.StdLog()}
	var err error
	if c.Metrics, err = run.ReadMetricsFile(e.l.Metrics()); err != nil {
		return c, err
	}
	if c.OutputFiles, err = ListFiles(e.l.Outputs()); err != nil {
		return c, err
	}
	c.LogTail, err = run.TailLines(e.l.StdLog(), target.LogTailLines, 64<<10)
	return c, err
}

// ListFiles lists regular files under dir as sorted slash paths; symlinks are
// listed only when they stay inside dir.
func ListFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && p == dir {
				return filepath.SkipDir
			}
			return err
		}
		if de.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if de.Type()&fs.ModeSymlink != 0 {
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				return nil
			}
			realDir, _ := filepath.EvalSymlinks(dir)
			if r, err := filepath.Rel(realDir, real); err != nil || strings.HasPrefix(r, "..") {
				return nil
			}
		} else if !de.Type().IsRegular() {
			return nil
		}
		clean, err := snapshot.SanitizeRelPath(filepath.ToSlash(rel))
		if err != nil {
			return nil
		}
		out = append(out, clean)
		return nil
	})
	sort.Strings(out)
	return out, err
}
