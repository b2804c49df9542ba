package env_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/field"

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

func TestContainerArgs(t *testing.T) {
	t.Parallel()
	const runDir = "/ws/runs/exp_1"
	base := env.Container{
		Name:   "aml-exp_1-0a1b2c3d",
		Labels: map[string]string{"aml.run_id": "exp_1", "aml.run_dir": runDir},
		RunDir: runDir,
		User:   "1000:1000",
		Env: map[string]string{
			"AML_OUTPUTS_DIR":  runDir + "/outputs",
			"AML_METRICS_FILE": runDir + "/.aml/metrics.jsonl",
			"PYTHONPATH":       runDir + "/.aml/lib:/opt/lib",
			"PLAIN":            "value with spaces",
		},
		Program: []string{"python3", "train.py", "--lr", "0.1"},
	}
	tests := []struct {
		name  string
		d     env.Docker
		c     func(env.Container) env.Container
		check func(t *testing.T, args []string, imageAt int)
	}{
		{"defaults", env.Docker{Enabled: true, BaseImage: "python:3.11"}, nil, func(t *testing.T, args []string, i int) {
			if got := flagValues(args[:i], "--shm-size"); !slices.Equal(got, []string{"2g"}) {
				t.Errorf("--shm-size %v, want [2g]", got)
			}
			for _, absent := range []string{"--gpus", "--network", "--rm", "-d"} {
				if slices.Contains(args[:i], absent) {
					t.Errorf("%s by default: %v", absent, args)
				}
			}
			if got := args[i+1:]; !slices.Equal(got, []string{"python3", "train.py", "--lr", "0.1"}) {
				t.Errorf("command %q", got)
			}
			if !slices.Contains(args[:i], "--init") {
				t.Errorf("no --init: %v", args)
			}
			if got := flagValues(args[:i], "--volume"); !slices.Equal(got, []string{runDir + ":" + env.ContainerRunDir}) {
				t.Errorf("--volume %v", got)
			}
			if got := flagValues(args[:i], "--workdir"); !slices.Equal(got, []string{env.ContainerRunDir}) {
				t.Errorf("--workdir %v", got)
			}
			if got := flagValues(args[:i], "--user"); !slices.Equal(got, []string{"1000:1000"}) {
				t.Errorf("--user %v", got)
			}
			if got := flagValues(args[:i], "--label"); !slices.Equal(got, []string{"aml.run_dir=" + runDir, "aml.run_id=exp_1"}) {
				t.Errorf("--label %v", got)
			}
		}},
		{"shm size, network, GPUs on a host with GPUs", env.Docker{Enabled: true, BaseImage: "pytorch/pytorch:2.3", ShmSize: "16g", Network: "host"},
			func(c env.Container) env.Container { c.HostGPUs = 2; return c },
			func(t *testing.T, args []string, i int) {
				if got := flagValues(args[:i], "--shm-size"); !slices.Equal(got, []string{"16g"}) {
					t.Errorf("--shm-size %v", got)
				}
				if got := flagValues(args[:i], "--network"); !slices.Equal(got, []string{"host"}) {
					t.Errorf("--network %v", got)
				}
				if got := flagValues(args[:i], "--gpus"); !slices.Equal(got, []string{"all"}) {
					t.Errorf("--gpus %v, want [all]", got)
				}
			}},
		{"a GPU count", env.Docker{Enabled: true, BaseImage: "img:1", GPUs: "1"},
			func(c env.Container) env.Container { c.HostGPUs = 4; c.CPUs = "0,1"; return c },
			func(t *testing.T, args []string, i int) {
				if got := flagValues(args[:i], "--gpus"); !slices.Equal(got, []string{"1"}) {
					t.Errorf("--gpus %v, want [1]", got)
				}
				if got := flagValues(args[:i], "--cpuset-cpus"); !slices.Equal(got, []string{"0,1"}) {
					t.Errorf("--cpuset-cpus %v", got)
				}
			}},
		{"no GPUs asked", env.Docker{Enabled: true, BaseImage: "img:1", GPUs: "none"},
			func(c env.Container) env.Container { c.HostGPUs = 4; return c },
			func(t *testing.T, args []string, i int) {
				if slices.Contains(args, "--gpus") {
					t.Errorf("--gpus with gpus = none: %v", args)
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
					if strings.Contains(a, runDir) && !strings.HasPrefix(a, runDir+":") && !strings.HasPrefix(a, "aml.run_dir=") {
						t.Errorf("host run dir leaks into the container: %q", a)
					}
				}
			}},
		{"user arguments come before the image, raw ones after them", env.Docker{Enabled: true, BaseImage: "img:1", Arguments: []string{"--memory", "2g", "--cpus=1.5"}, RawArguments: []string{"--ipc=host"}}, nil,
			func(t *testing.T, args []string, i int) {
				m, r := slices.Index(args, "--memory"), slices.Index(args, "--ipc=host")
				if m < 0 || m > i || args[m+1] != "2g" || slices.Index(args, "--cpus=1.5") > i || r < m || r > i {
					t.Errorf("arguments not before the image at %d: %q", i, args)
				}
			}},
		{"a built image", env.Docker{Enabled: true, BaseImage: "img:1"},
			func(c env.Container) env.Container { c.Image = "aml-env:0123"; return c },
			func(t *testing.T, args []string, i int) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			if tt.c != nil {
				c = tt.c(c)
			}
			args, err := env.ContainerArgs(tt.d, c)
			if err != nil {
				t.Fatal(err)
			}
			if len(args) < 1 || args[0] != "run" {
				t.Fatalf("not a docker run: %q", args)
			}
			image := tt.d.BaseImage
			if c.Image != "" {
				image = c.Image
			}
			i := slices.Index(args, image)
			if i < 0 {
				t.Fatalf("no image %q in %q", image, args)
			}
			tt.check(t, args, i)
		})
	}
}

// GPUs asked of a host without them are refused, naming the attribute; no
// GPU is on our machines, so the argv is what is tested.
func TestGPUArgs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		req     string
		host    int
		want    []string
		wantErr string
	}{
		{"", 0, nil, ""},
		{"", 2, []string{"--gpus", "all"}, ""},
		{"none", 2, nil, ""},
		{"all", 2, []string{"--gpus", "all"}, ""},
		{"2", 2, []string{"--gpus", "2"}, ""},
		{"3", 2, nil, "asks for 3 GPUs, but the host has 2"},
		{"all", 0, nil, "the host has none"},
	}
	for _, tt := range tests {
		got, err := env.GPUArgs(tt.req, tt.host)
		var fe *field.Error
		switch {
		case tt.wantErr != "":
			if !errors.As(err, &fe) || fe.Attr != "environment.docker.gpus" || !strings.Contains(fe.Msg, tt.wantErr) {
				t.Errorf("GPUArgs(%q, %d) = %v, %v; want an error with %q", tt.req, tt.host, got, err, tt.wantErr)
			}
		case err != nil || !slices.Equal(got, tt.want):
			t.Errorf("GPUArgs(%q, %d) = %v, %v; want %v", tt.req, tt.host, got, err, tt.want)
		}
	}
}

// Every fault names the attribute, the value and what is valid.
func TestValidateDocker(t *testing.T) {
	t.Parallel()
	ok := env.Docker{Enabled: true, BaseImage: "python:3.11"}
	tests := []struct {
		name     string
		mod      func(*env.Docker)
		attr     string
		contains string
	}{
		{"fine", func(d *env.Docker) {
			d.Arguments = []string{"--memory", "2g", "--cpus=2", "--read-only", "-e", "A=B", "--label", "team=ml", "--tmpfs", "/scratch"}
			d.ShmSize, d.Network, d.GPUs = "512m", "host", "all"
			d.RawArguments = []string{"--ipc=host"}
		}, "", ""},
		{"disabled is never checked", func(d *env.Docker) { d.Enabled = false; d.ShmSize = "lots" }, "", ""},
		{"no image", func(d *env.Docker) { d.BaseImage = " " }, "environment.docker.base_image", "required"},
		{"image is a flag", func(d *env.Docker) { d.BaseImage = "--privileged" }, "environment.docker.base_image", `"--privileged" is not an image reference`},
		{"shm size", func(d *env.Docker) { d.ShmSize = "2 GB" }, "environment.docker.shm_size", `"2 GB" is not a size`},
		{"network", func(d *env.Docker) { d.Network = "container:abc" }, "environment.docker.network", "host, none, bridge"},
		{"gpus", func(d *env.Docker) { d.GPUs = "some" }, "environment.docker.gpus", "all, none or a number"},
		{"privileged", func(d *env.Docker) { d.Arguments = []string{"--privileged"} }, "environment.docker.arguments[0]", "raw_arguments"},
		{"volume", func(d *env.Docker) { d.Arguments = []string{"--memory", "1g", "-v", "/:/host"} }, "environment.docker.arguments[2]", "allowed: "},
		{"owned flag", func(d *env.Docker) { d.Arguments = []string{"--name=x"} }, "environment.docker.arguments[0]", "names the container"},
		{"network flag", func(d *env.Docker) { d.Arguments = []string{"--network", "host"} }, "environment.docker.arguments[0]", "network attribute"},
		{"value missing", func(d *env.Docker) { d.Arguments = []string{"--memory"} }, "environment.docker.arguments[0]", "needs a value"},
		{"engine label", func(d *env.Docker) { d.Arguments = []string{"--cpus", "1", "--label", "aml.run_id=x"} }, "environment.docker.arguments[2]", "labels aml.* are the engine's"},
		{"engine label, one element", func(d *env.Docker) { d.Arguments = []string{"-l=aml.run_dir=/"} }, "environment.docker.arguments[0]", "labels aml.* are the engine's"},
		{"tmpfs over the run", func(d *env.Docker) { d.Arguments = []string{"--tmpfs", "/aml/run:size=1g"} }, "environment.docker.arguments[0]", "would hide the run directory"},
		{"value on a switch", func(d *env.Docker) { d.Arguments = []string{"--read-only=yes"} }, "environment.docker.arguments[0]", "takes no value"},
		{"raw --rm", func(d *env.Docker) { d.RawArguments = []string{"--rm"} }, "environment.docker.raw_arguments[0]", "removes the container"},
		{"registry", func(d *env.Docker) { d.Registry = &env.Registry{Address: "https://r.example/v2"} }, "environment.docker.registry.address", "not a registry host"},
		{"registry user without password", func(d *env.Docker) { d.Registry = &env.Registry{Address: "r.example", Username: "u"} }, "environment.docker.registry.password", "together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := ok
			tt.mod(&d)
			err := env.ValidateDocker(d)
			if tt.attr == "" {
				if err != nil {
					t.Fatalf("ValidateDocker: %v", err)
				}
				return
			}
			var fe *field.Error
			if !errors.As(err, &fe) || fe.Attr != tt.attr || !strings.Contains(fe.Msg, tt.contains) {
				t.Fatalf("ValidateDocker = %v; want %s: ...%s...", err, tt.attr, tt.contains)
			}
		})
	}
}

// The registry password is in no environment hash, and a password change
// builds no new image.
func TestDockerSecretsNotHashed(t *testing.T) {
	t.Parallel()
	e := func(pw string) env.Environment {
		return env.Environment{Docker: &env.Docker{Enabled: true, BaseImage: "r.example/img:1", Registry: &env.Registry{Address: "r.example", Username: "u", Password: pw}}}
	}
	if e("one").Hash() != e("two").Hash() {
		t.Error("the environment hash depends on the registry password")
	}
	if env.ImageKey(e("one"), "sha256:1") != env.ImageKey(e("two"), "sha256:1") {
		t.Error("the image key depends on the registry password")
	}
	if env.ImageKey(e("one"), "sha256:1") == env.ImageKey(e("one"), "sha256:2") {
		t.Error("a new base image id does not change the image key")
	}
	d := e("s3cret").Dock().WithoutSecrets()
	if d.Registry.Password != "" || d.Registry.Username != "u" {
		t.Errorf("WithoutSecrets = %+v", d.Registry)
	}
}

// The image recipe's pip install line is run by a real shell with a stand-in
// interpreter that prints its arguments, so quoting is checked by the shell.
func TestDockerfilePipInstallQuoting(t *testing.T) {
	t.Parallel()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	e := env.Environment{Docker: &env.Docker{Enabled: true, BaseImage: "python:3.11"}, Python: &env.Python{Conda: &env.CondaDependencies{
		PipPackages: []string{"numpy==1.26.4", `weird'pkg>=1; python_version >= "3.8"`},
		PipOptions:  env.PipOptions{IndexURL: "https://mirror.example/simple"},
	}}}
	df := env.Dockerfile(e, "sha256:k")
	var line string
	for _, l := range strings.Split(df, "\n") {
		if strings.Contains(l, "pip") && strings.Contains(l, "install") {
			line = strings.TrimPrefix(l, "RUN ")
		}
	}
	if !strings.HasPrefix(df, "FROM python:3.11\n") || line == "" {
		t.Fatalf("Dockerfile:\n%s", df)
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "python")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nfor a in \"$@\"; do printf '[%s]\\n' \"$a\"; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sh, "-c", strings.Replace(line, env.ImagePython, fake, 1)).CombinedOutput()
	if err != nil {
		t.Fatalf("sh -c %s: %v\n%s", line, err, out)
	}
	want := strings.Join([]string{
		"[-m]", "[pip]", "[install]", "[--no-input]",
		"[--index-url]", "[https://mirror.example/simple]",
		"[numpy==1.26.4]", `[weird'pkg>=1; python_version >= "3.8"]`, "",
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

	// An engine that refuses this user says so, and what to do.
	deniedDir := t.TempDir()
	denied := "#!/bin/sh\necho 'permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(deniedDir, "docker"), []byte(denied), 0o755); err != nil {
		t.Fatal(err)
	}
	err = env.CheckDocker(ctx, deniedDir)
	if err == nil || !strings.Contains(err.Error(), "refuses user") || !strings.Contains(err.Error(), "docker") {
		t.Errorf("engine refusing the user: %v", err)
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
	case exec.CommandContext(ctx, docker, "version", "--format", "{{.Server.Version}}").Run() != nil:
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

// A private image is pulled through a Docker configuration of its own, with
// the credentials in it and in no argument; it is removed after the pull.
func TestPullWithCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seen := filepath.Join(dir, "seen")
	fake := filepath.Join(dir, "docker")
	script := "#!/bin/sh\n{ echo \"args: $*\"; echo \"config: $DOCKER_CONFIG\"; cat \"$DOCKER_CONFIG/config.json\"; echo; } > " + seen + "\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	reg := &env.Registry{Address: "registry.example:5000", Username: "bot", Password: "s3cret-pw"}
	if err := (env.DockerCLI{Path: fake}).Pull(context.Background(), "registry.example:5000/team/img:1", reg); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(seen)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if strings.Contains(lines[0], "s3cret") || !strings.Contains(lines[0], "pull") {
		t.Errorf("docker pull arguments: %s", lines[0])
	}
	// base64("bot:s3cret-pw")
	if !strings.Contains(string(b), `"registry.example:5000":{"auth":"Ym90OnMzY3JldC1wdw=="}`) {
		t.Errorf("docker config: %s", b)
	}
	cfgDir := strings.TrimPrefix(lines[1], "config: ")
	if _, err := os.Stat(cfgDir); !os.IsNotExist(err) {
		t.Errorf("the pull's docker config %s is left behind (%v)", cfgDir, err)
	}
}
