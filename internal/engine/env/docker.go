package env

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"time"
)

// DockerRun describes one containerized run.
type DockerRun struct {
	Name       string            // container name
	RunDir     string            // host run directory, mounted as the working directory
	Env        map[string]string // variables passed with -e
	GPUs       bool              // pass --gpus all
	Python     string            // interpreter inside the image
	Script     []string          // script and arguments, relative to the run directory
	PipInstall []string          // packages installed at container start (not cached)
	IndexArgs  []string
}

// ContainerRunDir is where the run directory appears inside the container.
const ContainerRunDir = "/aml/run"

// DockerArgs builds the `docker run` command line for a run.
func DockerArgs(d Docker, r DockerRun) []string {
	args := []string{"docker", "run", "--rm", "--name", r.Name, "--init",
		"--volume", r.RunDir + ":" + ContainerRunDir, "--workdir", ContainerRunDir}
	shm := d.ShmSize
	if shm == "" {
		shm = "2g"
	}
	args = append(args, "--shm-size", shm)
	if r.GPUs {
		args = append(args, "--gpus", "all")
	}
	keys := make([]string, 0, len(r.Env))
	for k := range r.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := r.Env[k]
		// Host paths of the run directory become container paths.
		v = strings.ReplaceAll(v, r.RunDir, ContainerRunDir)
		args = append(args, "--env", k+"="+v)
	}
	args = append(args, d.Arguments...)
	args = append(args, d.BaseImage)
	python := r.Python
	if python == "" {
		python = "python"
	}
	run := append([]string{python}, r.Script...)
	if len(r.PipInstall) == 0 {
		return append(args, run...)
	}
	install := append(append([]string{python, "-m", "pip", "install", "--quiet", "--no-input"}, r.IndexArgs...), r.PipInstall...)
	return append(args, "sh", "-c", shellJoin(install)+" && exec "+shellJoin(run))
}

func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// CheckDocker reports whether a Docker engine answers on this host.
func CheckDocker(ctx context.Context, pathEnv string) error {
	docker, err := lookPathIn("docker", pathEnv)
	if err != nil {
		return fmt.Errorf("docker is not installed (not on PATH %s)", pathEnv)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, docker, "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker is installed but no Docker engine answers (`docker info`: %s)", lastLines(strings.TrimSpace(string(out)), 3))
	}
	return nil
}
