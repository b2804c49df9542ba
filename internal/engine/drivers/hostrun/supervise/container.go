package supervise

// Docker runs. The supervisor owns the container through a keeper process
// (`agent container <run-dir>`), its child: the keeper runs `docker run`
// attached, and on SIGTERM (a cancel, a time limit, or the supervisor dying:
// the keeper's parent-death signal) stops the container with `docker stop -t
// <grace>`; when the container has exited it reads the exit code from the
// container (`docker inspect`), removes it and exits with that code. Containers
// are named after the run directory and labelled with the run id and run
// directory, so an observer that finds the supervisor gone removes whatever is
// left (reapContainer) and a requeued attempt starts clean.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// Labels every run container carries.
const (
	LabelRunID  = "aml.run_id"
	LabelRunDir = "aml.run_dir"
)

// ContainerSpec is what the supervisor needs to run a Docker run (rank).
type ContainerSpec struct {
	Docker env.Docker        `json:"docker"` // without the registry password
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
	// Program is the argv inside the container; an empty Program[0] is the
	// built image's interpreter.
	Program []string          `json:"program"`
	Env     map[string]string `json:"env"`
	// Build is the system-managed environment built into an image FROM
	// Docker.BaseImage; nil runs the base image as it is.
	Build     *env.Environment `json:"build,omitempty"`
	CacheRoot string           `json:"cache_root,omitempty"`
}

// keeperFile holds the keeper's `docker run` arguments; resultFile its outcome.
const (
	keeperFile = "container.json"
	resultFile = "container-result.json"
)

type keeperSpec struct {
	Name     string   `json:"name"`
	Args     []string `json:"args"` // after "docker"
	GraceSec float64  `json:"grace_seconds"`
}

// ContainerResult is what the keeper learned of the container.
type ContainerResult struct {
	Started   bool   `json:"started"` // the container was created
	ExitCode  int    `json:"exit_code"`
	OOMKilled bool   `json:"oom_killed,omitempty"`
	Error     string `json:"error,omitempty"`
}

// ContainerName is the container of run directory dir: unique per run
// directory (pool ranks share a run id).
func ContainerName(runID, dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "aml-" + runID + "-" + hex.EncodeToString(sum[:4])
}

func NewContainerSpec(runID, experiment string, l Layout, p []string, launch env.Launch, vars map[string]string, envRoot string) *ContainerSpec {
	all := RunVarsFor(runID, experiment, l)
	for k, v := range vars {
		all[k] = v
	}
	withDefaults(all, MLflowVars(l, experiment))
	// The helper first, then what the run asked for.
	if pp := vars["PYTHONPATH"]; pp != "" {
		all["PYTHONPATH"] = l.HelperLib() + ":" + pp
	} else {
		all["PYTHONPATH"] = l.HelperLib()
	}
	if _, ok := all["HOME"]; !ok {
		all["HOME"] = "/tmp" // the host uid may have no home in the image
	}
	cs := &ContainerSpec{
		Docker: launch.Docker.WithoutSecrets(),
		Name:   ContainerName(runID, l.Dir),
		Labels: map[string]string{LabelRunID: runID, LabelRunDir: l.Dir},
		Env:    all,
	}
	if launch.System != nil {
		sys := *launch.System
		d := sys.Dock().WithoutSecrets()
		sys.Docker = &d
		cs.Build, cs.CacheRoot = &sys, envRoot
	}
	cs.Program = p
	return cs
}

// dockerCLI is the docker client the supervisor and observers use: the one
// on PATH, with this process's DOCKER_HOST.
func dockerCLI() (env.DockerCLI, error) { return env.FindDocker(os.Getenv("PATH")) }

// PullIfPrivate pulls the base image with the registry's credentials at
// staging (the credentials are in memory here and never written down).
func PullIfPrivate(ctx context.Context, d *env.Docker) error {
	if d == nil || d.Registry == nil || d.Registry.Password == "" {
		return nil
	}
	cli, err := dockerCLI()
	if err != nil {
		return err
	}
	if cli.ImageExists(ctx, d.BaseImage) {
		return nil
	}
	return cli.Pull(ctx, d.BaseImage, d.Registry)
}

// reapContainer removes a run directory's containers (running or not); used
// when the supervisor is gone, and before an attempt starts.
func ReapContainer(runDir string) int {
	cli, err := dockerCLI()
	if err != nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ids, err := cli.Run(ctx, "ps", "-aq", "--filter", "label="+LabelRunDir+"="+runDir)
	if err != nil || ids == "" {
		return 0
	}
	n := 0
	for _, id := range splitFields(ids) {
		if _, err := cli.Run(ctx, "rm", "-f", id); err == nil {
			n++
		}
	}
	return n
}

func splitFields(s string) []string {
	var out []string
	start := -1
	for i, r := range s {
		if r == ' ' || r == '\n' || r == '\t' || r == '\r' {
			if start >= 0 {
				out = append(out, s[start:i])
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		out = append(out, s[start:])
	}
	return out
}

// runContainer is the supervisor's part of a Docker run: build (or find) the
// image, start the keeper, and wait for it like for a script. It returns the
// supervisor's exit code.
func (s *supervisor) runContainer(logf *os.File, sigs <-chan os.Signal) int {
	cs := s.spec.Container
	cli, err := dockerCLI()
	if err != nil {
		return s.finish(run.Failed, run.ReasonSetupFailed, nil, "", err.Error())
	}
	// A container of an earlier attempt (a requeued pool run) goes first.
	if n := ReapContainer(s.l.Dir); n > 0 {
		fmt.Fprintf(logf, "aml: removed %d container(s) of an earlier attempt\n", n)
	}
	image := cs.Docker.BaseImage
	program := append([]string{}, cs.Program...)
	if cs.Build != nil {
		tag, code, ok := s.prepareImage(logf, sigs, cli)
		if !ok {
			return code
		}
		image = tag
		if len(program) > 0 && program[0] == "" {
			program[0] = env.ImagePython
		}
	}
	if len(program) > 0 && program[0] == "" {
		program[0] = env.DefaultInterpreter
	}
	c := env.Container{
		Name: cs.Name, Labels: cs.Labels, RunDir: s.l.Dir,
		User:  fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()),
		Env:   cs.Env,
		Image: image, Program: program,
		HostGPUs: CountGPUs(context.Background()),
	}
	// What the host runtime adds at start (a pool node's, a rank's) wins, as
	// for host runs.
	for k, v := range s.spec.RunVars {
		c.Env[k] = v
	}
	if a, _ := readNodeAssignment(s.l); a != nil && len(a.CPUs) > 0 {
		c.CPUs = cpuList(a.CPUs)
	}
	args, err := env.ContainerArgs(cs.Docker, c)
	if err != nil {
		fmt.Fprintf(logf, "aml: %v\n", err)
		return s.finish(run.Failed, run.ReasonSetupFailed, nil, "", err.Error())
	}
	if err := WriteJSONAtomic(filepath.Join(s.l.Control(), keeperFile), keeperSpec{Name: cs.Name, Args: args, GraceSec: s.spec.GraceSec}); err != nil {
		return s.finish(run.Failed, run.ReasonSetupFailed, nil, "", err.Error())
	}
	exe, err := os.Executable()
	if err != nil {
		return s.finish(run.Failed, run.ReasonSetupFailed, nil, "", err.Error())
	}
	fmt.Fprintf(logf, "aml: running in container %s (image %s)\n", cs.Name, image)
	cmd := exec.Command(exe, "agent", "container", s.l.Dir)
	cmd.Dir = s.l.Dir
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// SIGTERM, not SIGKILL, when we die: the keeper then stops the container.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	s.st.Container = cs.Name
	return s.watch(cmd, logf, sigs, true)
}

func cpuList(cpus []int) string {
	out := ""
	for i, c := range cpus {
		if i > 0 {
			out += ","
		}
		out += strconv.Itoa(c)
	}
	return out
}

// prepareImage builds or finds the run's image (status Preparing); a cancel
// during the build stops it.
func (s *supervisor) prepareImage(logf *os.File, sigs <-chan os.Signal, cli env.DockerCLI) (tag string, code int, ok bool) {
	cs := s.spec.Container
	var res *env.Result
	code, ok = s.buildUnderCancel(logf, sigs, "Docker image", func(ctx context.Context, blog io.Writer) (err error) {
		res, tag, err = env.ImageCache{Root: cs.CacheRoot, Docker: cli}.Ensure(ctx, *cs.Build, blog)
		return err
	})
	if !ok {
		return "", code, false
	}
	if res.CacheHit {
		fmt.Fprintf(logf, "aml: image %s (environment %s) found; nothing to build\n", tag, res.Key)
	} else {
		fmt.Fprintf(logf, "aml: image %s (environment %s) built in %.1fs\n", tag, res.Key, res.BuildSeconds)
	}
	s.st.Environment = &run.EnvInfo{Key: res.Key, CacheHit: res.CacheHit, BuildSeconds: res.BuildSeconds, Builder: res.Builder}
	return tag, 0, true
}

// KeepContainer is the body of `agent container <run-dir>`: run the run's
// container attached, stop it on SIGTERM, read its exit code, remove it.
func KeepContainer(runDir string) int {
	l := Layout{Dir: runDir}
	var ks keeperSpec
	if err := l.readJSON(filepath.Join(l.Control(), keeperFile), &ks); err != nil {
		fmt.Fprintf(os.Stderr, "aml: %v\n", err)
		return 125
	}
	cli, err := dockerCLI()
	if err != nil {
		fmt.Fprintf(os.Stderr, "aml: %v\n", err)
		return 125
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	cmd := exec.Command(cli.Path, ks.Args...)
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Signals are ours to handle: the client gets none (it would forward them
	// to the script without the grace period).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "aml: cannot start docker: %v\n", err)
		return 125
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	var werr error
	for waiting := true; waiting; {
		select {
		case werr = <-done:
			waiting = false
		case <-sigs:
			if stopped {
				continue
			}
			stopped = true
			grace := ks.GraceSec
			var req CancelRequest
			if err := l.readJSON(l.CancelReq(), &req); err == nil {
				grace = req.GraceSec
			}
			secs := int(math.Ceil(grace))
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+60)*time.Second)
				defer cancel()
				if out, err := cli.Run(ctx, "stop", "-t", strconv.Itoa(secs), ks.Name); err != nil {
					fmt.Fprintf(os.Stderr, "aml: docker stop %s: %v: %s\n", ks.Name, err, out)
					_, _ = cli.Run(ctx, "kill", ks.Name)
				}
			}()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res := ContainerResult{}
	out, err := cli.Run(ctx, "inspect", "--format", "{{json .State}}", ks.Name)
	var state struct {
		Status    string
		ExitCode  int
		OOMKilled bool
		Error     string
	}
	switch {
	case err != nil || json.Unmarshal([]byte(out), &state) != nil:
		res.ExitCode = 125
		var ee *exec.ExitError
		if errors.As(werr, &ee) && ee.ExitCode() > 0 {
			res.ExitCode = ee.ExitCode()
		}
		res.Error = "docker run did not create the container (see the log)"
	case state.Status == "running" || state.Status == "paused" || state.Status == "restarting":
		// The client ended, the container did not: it is removed below, and
		// the run did not finish.
		res.Started, res.ExitCode = true, 125
		res.Error = fmt.Sprintf("the docker client ended (%v) while the container was %s", werr, state.Status)
	default:
		// A container that never ran (its program could not start) stays "created".
		res.Started = state.Status != "created"
		res.ExitCode, res.OOMKilled, res.Error = state.ExitCode, state.OOMKilled, state.Error
	}
	if out, err := cli.Run(ctx, "rm", "-f", ks.Name); err != nil {
		fmt.Fprintf(os.Stderr, "aml: docker rm %s: %v: %s\n", ks.Name, err, out)
	}
	_ = WriteJSONAtomic(filepath.Join(l.Control(), resultFile), res)
	if res.ExitCode < 0 || res.ExitCode > 255 {
		return 125
	}
	return res.ExitCode
}

func readContainerResult(l Layout) (*ContainerResult, error) {
	var r ContainerResult
	if err := l.readJSON(filepath.Join(l.Control(), resultFile), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// keeperBackstop is how long past the grace period the supervisor waits for
// the keeper's `docker stop` before it kills the keeper and removes the
// container itself.
const keeperBackstop = 60 * time.Second

// signalContainer sends sig to a container's main process (best effort).
func signalContainer(name, sig string) {
	cli, err := dockerCLI()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = cli.Run(ctx, "kill", "--signal", sig, name)
}

// containerExited turns the keeper's end into the run's: the exit code is
// the container's; a container that never started is a setup failure.
func (s *supervisor) containerExited(logf *os.File, werr error, stopping run.Status, stopReason string) int {
	res, err := readContainerResult(s.l)
	if err != nil || res == nil {
		// The keeper was killed: what is left of the container goes.
		ReapContainer(s.l.Dir)
		if stopping != "" {
			return s.exited(werr, stopping, stopReason)
		}
		return s.finish(run.Failed, run.ReasonLost, nil, "", fmt.Sprintf("the container's keeper ended without a result (%v)", werr))
	}
	if !res.Started {
		msg := "docker run failed: " + res.Error
		if tail, err := run.TailLines(s.l.Dir, s.l.StdLog(), 5, 16<<10); err == nil && tail != "" {
			msg += "\n" + tail
		}
		if stopping == run.Canceled {
			return s.finish(run.Canceled, stopReason, nil, "", "canceled before the container started")
		}
		return s.finish(run.Failed, run.ReasonSetupFailed, &res.ExitCode, "", msg)
	}
	code := res.ExitCode
	switch {
	case stopping != "":
		return s.finish(stopping, stopReason, &code, "", "")
	case res.OOMKilled:
		fmt.Fprintf(logf, "\naml: the container ran out of memory and was killed\n")
		return s.finish(run.Failed, run.ReasonKilled, &code, "SIGKILL", "killed: the container ran out of memory")
	case res.Error != "" && code != 0:
		return s.finish(run.Failed, run.ReasonLost, &code, "", res.Error)
	case code != 0:
		return s.finish(run.Failed, run.ReasonNonzeroExit, &code, "", fmt.Sprintf("exit code %d", code))
	default:
		s.stamp(run.Finalizing) // as exited: both in the timeline, one write
		return s.finish(run.Completed, "", &code, "", "")
	}
}
