package env_test

import (
	"context"
	"errors"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/env"
)

// flagValues returns the values given to flag in args (before the image).
func flagValues(args []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			out = append(out, args[i+1])
		}
	}
	return out
}

func TestDockerArgs(t *testing.T) {
	t.Parallel()
	const runDir = "/ws/runs/exp_1"
	base := env.DockerRun{
		Name:   "aml-exp_1",
		RunDir: runDir,
		Env: map[string]string{
			"AML_OUTPUTS_DIR":  runDir + "/outputs",
			"AML_METRICS_FILE": runDir + "/.aml/metrics.jsonl",
			"PYTHONPATH":       runDir + "/.aml/lib:/opt/lib",
			"PLAIN":            "value with spaces",
		},
		Script: []string{"train.py", "--lr", "0.1"},
	}
	tests := []struct {
		name  string
		d     env.Docker
		r     func(env.DockerRun) env.DockerRun
		check func(t *testing.T, args []string, imageAt int)
	}{
		{"defaults", env.Docker{Enabled: true, BaseImage: "python:3.11"}, nil, func(t *testing.T, args []string, i int) {
			if got := flagValues(args[:i], "--shm-size"); !slices.Equal(got, []string{"2g"}) {
				t.Errorf("--shm-size %v, want [2g]", got)
			}
			if slices.Contains(args[:i], "--gpus") {
				t.Errorf("--gpus without GPUs: %v", args)
			}
			if got := args[i+1:]; !slices.Equal(got, []string{"python", "train.py", "--lr", "0.1"}) {
				t.Errorf("command %q, want the default interpreter python", got)
			}
			for _, want := range []string{"--rm", "--init"} {
				if !slices.Contains(args[:i], want) {
					t.Errorf("no %s: %v", want, args)
				}
			}
			if got := flagValues(args[:i], "--volume"); !slices.Equal(got, []string{runDir + ":" + env.ContainerRunDir}) {
				t.Errorf("--volume %v", got)
			}
			if got := flagValues(args[:i], "--workdir"); !slices.Equal(got, []string{env.ContainerRunDir}) {
				t.Errorf("--workdir %v", got)
			}
			if got := flagValues(args[:i], "--name"); !slices.Equal(got, []string{"aml-exp_1"}) {
				t.Errorf("--name %v", got)
			}
		}},
		{"shm size and GPUs", env.Docker{Enabled: true, BaseImage: "pytorch/pytorch:2.3", ShmSize: "16g"},
			func(r env.DockerRun) env.DockerRun { r.GPUs = true; r.Python = "/opt/conda/bin/python"; return r },
			func(t *testing.T, args []string, i int) {
				if got := flagValues(args[:i], "--shm-size"); !slices.Equal(got, []string{"16g"}) {
					t.Errorf("--shm-size %v", got)
				}
				if got := flagValues(args[:i], "--gpus"); !slices.Equal(got, []string{"all"}) {
					t.Errorf("--gpus %v, want [all]", got)
				}
				if args[i+1] != "/opt/conda/bin/python" {
					t.Errorf("interpreter %q", args[i+1])
				}
			}},
		{"environment rewritten to the container run dir", env.Docker{Enabled: true, BaseImage: "python:3.11"}, nil,
			func(t *testing.T, args []string, i int) {
				got := flagValues(args[:i], "--env")
				want := []string{ // sorted by name
					"AML_METRICS_FILE=/aml/run/.aml/metrics.jsonl",
					"AML_OUTPUTS_DIR=/aml/run/outputs",
					"PLAIN=value with spaces",
					"PYTHONPATH=/aml/run/.aml/lib:/opt/lib",
				}
				if !slices.Equal(got, want) {
					t.Errorf("--env %q\nwant %q", got, want)
				}
				for _, a := range args {
					if strings.Contains(a, runDir) && !strings.HasPrefix(a, runDir+":") {
						t.Errorf("host run dir leaks into the container: %q", a)
					}
				}
			}},
		{"user arguments come before the image", env.Docker{Enabled: true, BaseImage: "img:1", Arguments: []string{"--network", "host", "--ipc=host"}}, nil,
			func(t *testing.T, args []string, i int) {
				n := slices.Index(args, "--network")
				if n < 0 || n > i || args[n+1] != "host" || slices.Index(args, "--ipc=host") > i {
					t.Errorf("arguments not before the image at %d: %q", i, args)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base
			if tt.r != nil {
				r = tt.r(r)
			}
			args := env.DockerArgs(tt.d, r)
			if len(args) < 2 || args[0] != "docker" || args[1] != "run" {
				t.Fatalf("not a docker run: %q", args)
			}
			i := slices.Index(args, tt.d.BaseImage)
			if i < 0 {
				t.Fatalf("no image %q in %q", tt.d.BaseImage, args)
			}
			tt.check(t, args, i)
		})
	}
}

// The pip install at container start is one `sh -c` script: run it with a real
// shell and a stand-in interpreter that prints its arguments, so quoting is
// checked by the shell itself.
func TestDockerArgsPipInstallQuoting(t *testing.T) {
	t.Parallel()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake python")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nfor a in \"$@\"; do printf '[%s]\\n' \"$a\"; done\necho ---\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := env.Docker{Enabled: true, BaseImage: "python:3.11"}
	r := env.DockerRun{
		Name: "aml-x", RunDir: "/ws/runs/x", Python: fake,
		Script:     []string{"train.py", "it's", "$HOME", "a b"},
		PipInstall: []string{"numpy==1.26.4", `weird'pkg>=1; python_version >= "3.8"`},
		IndexArgs:  []string{"--index-url", "https://mirror.example/simple"},
	}
	args := env.DockerArgs(d, r)
	i := slices.Index(args, d.BaseImage)
	if i < 0 || len(args) != i+4 || args[i+1] != "sh" || args[i+2] != "-c" {
		t.Fatalf("pip install is not wrapped in sh -c after the image: %q", args)
	}
	script := args[i+3]
	if !strings.Contains(script, "&& exec ") {
		t.Errorf("the script does not exec the run after installing: %s", script)
	}
	out, err := exec.Command(sh, "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("sh -c %s: %v\n%s", script, err, out)
	}
	want := strings.Join([]string{
		"[-m]", "[pip]", "[install]", "[--quiet]", "[--no-input]",
		"[--index-url]", "[https://mirror.example/simple]",
		"[numpy==1.26.4]", `[weird'pkg>=1; python_version >= "3.8"]`, "---",
		"[train.py]", "[it's]", "[$HOME]", "[a b]", "---", "",
	}, "\n")
	if string(out) != want {
		t.Errorf("the shell saw\n%s\nwant\n%s", out, want)
	}
}

// CheckDocker says which part is missing: the client, or an engine that answers.
func TestCheckDocker(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	empty := t.TempDir()
	err := env.CheckDocker(ctx, empty)
	if err == nil || !strings.Contains(err.Error(), "not installed") || !strings.Contains(err.Error(), empty) {
		t.Errorf("no client on PATH: %v", err)
	}

	// A client whose engine does not answer (a stand-in that fails like docker does).
	fakeDir := t.TempDir()
	script := "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(fakeDir, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	err = env.CheckDocker(ctx, fakeDir)
	if err == nil || !strings.Contains(err.Error(), "no Docker engine answers") || !strings.Contains(err.Error(), "Cannot connect to the Docker daemon") {
		t.Errorf("client without engine: %v", err)
	}

	// This machine, whatever it has.
	pathEnv := os.Getenv("PATH")
	err = env.CheckDocker(ctx, pathEnv)
	docker, lerr := exec.LookPath("docker")
	switch {
	case lerr != nil:
		t.Logf("this host has no docker client: %v", err)
		if err == nil || !strings.Contains(err.Error(), "not installed") {
			t.Errorf("no docker client, CheckDocker = %v", err)
		}
	case exec.CommandContext(ctx, docker, "info", "--format", "{{.ServerVersion}}").Run() != nil:
		t.Logf("this host has a docker client and no engine: %v", err)
		if err == nil || !strings.Contains(err.Error(), "no Docker engine answers") {
			t.Errorf("docker client without an engine, CheckDocker = %v", err)
		}
	default:
		t.Logf("this host has a Docker engine")
		if err != nil {
			t.Errorf("docker info works, CheckDocker = %v", err)
		}
	}

	// Through PrepareLocal, the error names the attribute.
	_, err = env.PrepareLocal(ctx, env.Environment{Docker: &env.Docker{Enabled: true, BaseImage: "python:3.11"}}, empty)
	var fe *field.Error
	if !errors.As(err, &fe) || fe.Attr != "environment.docker.enabled" || !strings.Contains(fe.Msg, "not installed") {
		t.Errorf("PrepareLocal with docker and no client: %v", err)
	}
}
