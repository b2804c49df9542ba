package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// Supervise runs one run to completion: it is the body of the detached
// `terraform-provider-aml agent supervise <run-dir>` process. It starts the script in
// a process group of its own, enforces the maximum duration, turns SIGTERM into a
// graceful cancel of the group, and records every change in status.json. It returns
// the process exit code.
func Supervise(runDir string) int {
	return superviseLayout(Layout{Dir: runDir}, nil)
}

// SuperviseRank is the body of `agent supervise-rank <run-dir>`: one rank of a
// multi-node run whose ranks share the run directory, launched by the batch
// system (srun), which says which rank this is (SLURM_PROCID, SLURM_NODEID,
// SLURM_NTASKS). Rank 0 writes the run's own status, log and metrics.
func SuperviseRank(runDir string) int {
	rank, _ := strconv.Atoi(os.Getenv("SLURM_PROCID"))
	l := Layout{Dir: runDir, Rank: rank}
	if err := os.MkdirAll(l.rankDir(), 0o700); err != nil {
		fmt.Fprintf(os.Stderr, "aml-supervisor: %v\n", err)
		return 2
	}
	vars := map[string]string{"RANK": strconv.Itoa(rank), "LOCAL_RANK": "0", "AML_METRICS_FILE": l.Metrics(), "AML_TAGS_FILE": l.Tags()}
	if n := os.Getenv("SLURM_NODEID"); n != "" {
		vars["NODE_RANK"] = n
	}
	if n := os.Getenv("SLURM_NTASKS"); n != "" {
		vars["WORLD_SIZE"] = n
	}
	return superviseLayout(l, vars)
}

func superviseLayout(l Layout, rankVars map[string]string) int {
	logger := log.New(os.Stderr, "aml-supervisor ", log.LstdFlags|log.LUTC|log.Lmicroseconds)
	var spec SupervisorSpec
	if err := l.readJSON(l.Spec(), &spec); err != nil {
		logger.Printf("cannot read spec: %v", err)
		return 2
	}
	// A pool node adds its CPUs (affinity, inherited by the script) and variables.
	if a, err := readNodeAssignment(l); err != nil {
		logger.Printf("cannot read node assignment: %v", err)
	} else if a != nil {
		if len(a.CPUs) > 0 {
			if err := setAffinity(a.CPUs); err != nil {
				logger.Printf("cpu affinity %v: %v", a.CPUs, err)
			}
		}
		spec.RunVars = merged(spec.RunVars, a.Env)
	}
	spec.RunVars = merged(spec.RunVars, rankVars)
	sv := &supervisor{l: l, spec: spec, log: logger, env: RunEnvironment(os.Environ(), spec.Vars, spec.RunVars, MLflowVars(l, spec.Experiment), spec.HelperLib)}
	return sv.run()
}

type supervisor struct {
	l    Layout
	spec SupervisorSpec
	log  *log.Logger
	st   SupervisorStatus
	env  []string // the script's environment
	warn chan os.Signal
}

func merged(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func (s *supervisor) save() {
	// Each status is stamped when it is first written: the run's timeline.
	s.stamp(s.st.Status)
	if err := WriteJSONAtomic(s.l.Status(), s.st); err != nil {
		s.log.Printf("writing status: %v", err)
	}
}

// stamp records when the run first reached status, for its timeline.
func (s *supervisor) stamp(status run.Status) {
	if _, ok := s.st.Phases[status]; !ok && status != "" {
		if s.st.Phases == nil {
			s.st.Phases = map[run.Status]time.Time{}
		}
		s.st.Phases[status] = time.Now().UTC()
	}
}

func (s *supervisor) finish(status run.Status, reason string, code *int, sig, msg string) int {
	now := time.Now().UTC()
	s.st.Status, s.st.FailureReason, s.st.ExitCode, s.st.Signal, s.st.Message = status, reason, code, sig, msg
	s.st.EndTime = &now
	s.save()
	s.log.Printf("run %s finished: %s %s", s.spec.RunID, status, reason)
	return 0
}

func (s *supervisor) run() int {
	s.st.SupervisorPID = os.Getpid()
	s.st.SupervisorTicks = SelfStartTicks()
	s.st.Status = run.Starting

	if err := becomeSubreaper(); err != nil {
		s.log.Printf("cannot become the run's subreaper (background processes may outlive it): %v", err)
	}
	// Subscribe before starting the child so an early cancel is not lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	// A batch system's warning that the time limit is near (sbatch --signal)
	// goes on to the script, which may checkpoint.
	s.warn = make(chan os.Signal, 1)
	signal.Notify(s.warn, syscall.SIGUSR1)
	defer signal.Stop(s.warn)

	logf, err := os.OpenFile(s.l.StdLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return s.finish(run.Failed, run.ReasonSetupFailed, nil, "", fmt.Sprintf("opening log: %v", err))
	}
	defer logf.Close()

	if s.spec.Container != nil {
		return s.runContainer(logf, sigs)
	}
	if len(s.spec.Argv) == 0 {
		return s.finish(run.Failed, run.ReasonSetupFailed, nil, "", "empty command")
	}
	if s.spec.Environment != nil {
		python, release, code, ok := s.prepare(logf, sigs)
		if !ok {
			return code
		}
		defer release()
		if s.spec.Argv[0] == "" {
			s.spec.Argv[0] = python
		}
		s.env = activate(s.env, filepath.Dir(filepath.Dir(python)))
		// A PySpark driver (spark-submit) starts its Python from these.
		s.env = setDefault(s.env, "PYSPARK_PYTHON", python)
		s.env = setDefault(s.env, "PYSPARK_DRIVER_PYTHON", python)
	}
	cmd := exec.Command(s.spec.Argv[0], s.spec.Argv[1:]...)
	cmd.Dir = s.l.Dir
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own group (cancel signals the group); killed with us if we are killed,
	// so a lost supervisor never leaves a script running unobserved.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return s.watch(cmd, logf, sigs, false)
}

// watch starts cmd (the script, or a container's keeper) and supervises it to
// the end: the time limit, cancels, SIGUSR1, what it leaves behind.
func (s *supervisor) watch(cmd *exec.Cmd, logf *os.File, sigs <-chan os.Signal, container bool) int {
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(logf, "aml: cannot start %q: %v\n", cmd.Path, err)
		return s.finish(run.Failed, run.ReasonSetupFailed, nil, "", fmt.Sprintf("cannot start %s: %v", cmd.Path, err))
	}
	start := time.Now().UTC()
	s.st.ChildPID, s.st.StartTime, s.st.Status = cmd.Process.Pid, &start, run.Running
	s.save()
	s.log.Printf("run %s started pid %d", s.spec.RunID, cmd.Process.Pid)

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var deadline <-chan time.Time
	if s.spec.MaxDurationSec > 0 {
		t := time.NewTimer(time.Duration(s.spec.MaxDurationSec * float64(time.Second)))
		defer t.Stop()
		deadline = t.C
	}
	grace := time.Duration(s.spec.GraceSec * float64(time.Second))
	pgid := cmd.Process.Pid

	// stopping is set once we have asked the group to stop; it decides the outcome.
	var stopping run.Status
	var stopReason string
	var killTimer <-chan time.Time
	stop := func(status run.Status, reason string, g time.Duration) {
		if stopping != "" {
			return
		}
		stopping, stopReason = status, reason
		if status == run.Canceled {
			s.st.Status = run.CancelRequested
			s.save()
		}
		if container {
			// The keeper stops the container with the grace period; the
			// timer is only a backstop for a keeper that hangs.
			s.log.Printf("stopping run %s (%s): docker stop -t %s through the keeper (pid %d)", s.spec.RunID, reason, g, pgid)
			_ = syscall.Kill(pgid, syscall.SIGTERM)
			killTimer = time.After(g + keeperBackstop)
			return
		}
		s.log.Printf("stopping run %s (%s): SIGTERM to group %d, SIGKILL after %s", s.spec.RunID, reason, pgid, g)
		_ = KillGroup(pgid, syscall.SIGTERM)
		killTimer = time.After(g)
	}

	for {
		select {
		case werr := <-done:
			// Whatever the script left behind goes with it: its group, and
			// every descendant that left the group (we are their subreaper).
			_ = KillGroup(pgid, syscall.SIGKILL)
			if n := killDescendants(); n > 0 {
				s.log.Printf("stopped %d background process(es) the run left behind", n)
				fmt.Fprintf(logf, "\naml: stopped %d background process(es) the script left running\n", n)
			}
			if container {
				return s.containerExited(logf, werr, stopping, stopReason)
			}
			return s.exited(werr, stopping, stopReason)
		case <-deadline:
			fmt.Fprintf(logf, "\naml: run exceeded max_run_duration_seconds=%g; stopping it\n", s.spec.MaxDurationSec)
			stop(run.Failed, run.ReasonTimedOut, grace)
		case <-sigs:
			g, reason := s.cancelRequest(grace)
			fmt.Fprintf(logf, "\naml: cancel requested (%s); stopping the run\n", reason)
			stop(run.Canceled, reason, g)
		case <-s.warn:
			if container {
				s.log.Printf("SIGUSR1 (time limit near): passed on to container %s", s.spec.Container.Name)
				signalContainer(s.spec.Container.Name, "USR1")
				continue
			}
			s.log.Printf("SIGUSR1 (time limit near): passed on to group %d", pgid)
			_ = KillGroup(pgid, syscall.SIGUSR1)
		case <-killTimer:
			s.log.Printf("grace period over: SIGKILL to group %d", pgid)
			_ = KillGroup(pgid, syscall.SIGKILL)
			if container {
				ReapContainer(s.l.Dir)
			}
			killTimer = nil
		}
	}
}

// setDefault sets k=v in envv unless k is set already.
func setDefault(envv []string, k, v string) []string {
	for _, kv := range envv {
		if strings.HasPrefix(kv, k+"=") {
			return envv
		}
	}
	return append(envv, k+"="+v)
}

// activate puts a virtual environment first on PATH, as `source bin/activate` would.
func activate(envv []string, venv string) []string {
	out := make([]string, 0, len(envv)+1)
	path := ""
	for _, kv := range envv {
		switch {
		case strings.HasPrefix(kv, "PATH="):
			path = kv[len("PATH="):]
		case strings.HasPrefix(kv, "VIRTUAL_ENV="), strings.HasPrefix(kv, "PYTHONHOME="):
		default:
			out = append(out, kv)
		}
	}
	bin := filepath.Join(venv, "bin")
	if path != "" {
		bin += string(os.PathListSeparator) + path
	}
	return append(out, "PATH="+bin, "VIRTUAL_ENV="+venv)
}

// cancelRequest reads the grace period and reason the engine left for us.
func (s *supervisor) cancelRequest(grace time.Duration) (time.Duration, string) {
	reason := run.ReasonCanceled
	var req CancelRequest
	if err := s.l.readJSON(s.l.CancelReq(), &req); err == nil {
		grace = time.Duration(req.GraceSec * float64(time.Second))
		if req.Reason != "" {
			reason = req.Reason
		}
	}
	return grace, reason
}

// prepare builds or finds the run's system-managed environment (status
// Preparing), then holds it in use so it is not evicted while the run lasts.
// A cancel during the build stops it. ok is false when the run has ended.
func (s *supervisor) prepare(logf *os.File, sigs <-chan os.Signal) (python string, release func(), code int, ok bool) {
	es := s.spec.Environment
	s.st.Builder = env.Cache{Root: es.CacheRoot}.BuilderFor(es.Definition, es.PathEnv)
	var res *env.Result
	code, ok = s.buildUnderCancel(logf, sigs, "Python environment", func(ctx context.Context, blog io.Writer) (err error) {
		res, err = env.Cache{Root: es.CacheRoot, MaxBytes: es.CacheMaxBytes}.Ensure(ctx, es.Definition, es.PathEnv, blog)
		return err
	})
	if !ok {
		return "", nil, code, false
	}
	if res.CacheHit {
		fmt.Fprintf(logf, "aml: environment %s found in the cache; nothing to install\n", res.Key)
	} else {
		fmt.Fprintf(logf, "aml: environment %s built with %s in %.1fs\n", res.Key, res.Builder, res.BuildSeconds)
	}
	s.st.Environment = &run.EnvInfo{Key: res.Key, CacheHit: res.CacheHit, BuildSeconds: res.BuildSeconds, Builder: res.Builder}
	release, err := env.HoldInUse(res.Dir)
	if err != nil {
		release = func() {}
	}
	return res.Python, release, 0, true
}

// buildUnderCancel runs build (an environment or an image, what names it in
// the run's log) with the run Preparing and the build log open; a cancel
// stops it. ok is false when the run has ended, with code its exit.
func (s *supervisor) buildUnderCancel(logf *os.File, sigs <-chan os.Signal, what string, build func(ctx context.Context, blog io.Writer) error) (code int, ok bool) {
	s.st.Status = run.Preparing
	s.save()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	canceled := make(chan string, 1)
	stop := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			_, reason := s.cancelRequest(0)
			canceled <- reason
			cancel()
		case <-stop:
		}
	}()
	fmt.Fprintf(logf, "aml: preparing the %s (build log: %s/%s)\n", what, LogsDir, filepath.Base(s.l.EnvBuildLog()))
	blog, err := os.OpenFile(s.l.EnvBuildLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		close(stop)
		return s.finish(run.Failed, run.ReasonSetupFailed, nil, "", err.Error()), false
	}
	defer blog.Close()
	err = build(ctx, blog)
	close(stop)
	select {
	case reason := <-canceled:
		fmt.Fprintf(logf, "aml: cancel requested (%s) while preparing the %s\n", reason, what)
		return s.finish(run.Canceled, reason, nil, "", "canceled while preparing the "+what), false
	default:
	}
	if err != nil {
		// The details go to the run's message (and the apply's error); the log
		// points at the full build output.
		var be *env.BuildError
		if errors.As(err, &be) {
			fmt.Fprintf(logf, "aml: building the %s failed at %s (%v); full output in %s/%s\n", what, be.Step, be.Err, LogsDir, filepath.Base(s.l.EnvBuildLog()))
		} else {
			fmt.Fprintf(logf, "aml: %v\n", err)
		}
		return s.finish(run.Failed, run.ReasonSetupFailed, nil, "", err.Error()), false
	}
	return 0, true
}

func (s *supervisor) exited(werr error, stopping run.Status, stopReason string) int {
	code := 0
	sig := ""
	if werr != nil {
		var ee *exec.ExitError
		if !errors.As(werr, &ee) {
			return s.finish(run.Failed, run.ReasonLost, nil, "", werr.Error())
		}
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			sig = ws.Signal().String()
			code = 128 + int(ws.Signal())
		}
	}
	codep := &code
	switch {
	case stopping != "":
		return s.finish(stopping, stopReason, codep, sig, "")
	case sig != "":
		return s.finish(run.Failed, run.ReasonKilled, codep, sig, "killed by signal "+sig)
	case code != 0:
		return s.finish(run.Failed, run.ReasonNonzeroExit, codep, "", fmt.Sprintf("exit code %d", code))
	default:
		// Nothing is left to do on this host between Finalizing and
		// Completed: the timeline gets both, the status file one write.
		s.stamp(run.Finalizing)
		return s.finish(run.Completed, "", codep, "", "")
	}
}
