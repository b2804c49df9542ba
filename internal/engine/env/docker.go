package env

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/field"
)

// Docker runs the script inside a container image.
type Docker struct {
	Enabled   bool   `json:"enabled"`
	BaseImage string `json:"base_image,omitempty"`
	ShmSize   string `json:"shm_size,omitempty"`
	// Network is `docker run --network`; empty: the engine's default.
	Network string `json:"network,omitempty"`
	// GPUs is `--gpus`: "" (all of the host's GPUs when it has any), "none",
	// "all" or a count.
	GPUs string `json:"gpus,omitempty"`
	// Arguments are extra `docker run` flags from AllowedDockerFlags;
	// RawArguments are passed as they are (documented: they can undo the
	// container's isolation).
	Arguments    []string  `json:"arguments,omitempty"`
	RawArguments []string  `json:"raw_arguments,omitempty"`
	Registry     *Registry `json:"registry,omitempty"`
}

// Registry holds the credentials for pulling a private base image.
type Registry struct {
	Address  string `json:"address"`
	Username string `json:"username,omitempty"`
	// Password is kept with the run configuration in the workspace store
	// (0600); it is never in an environment hash, a run's spec file, a log or
	// a message.
	Password string `json:"password,omitempty"`
}

// withoutSecrets is d as it may be written down or hashed.
func (d Docker) withoutSecrets() Docker {
	if d.Registry != nil {
		r := *d.Registry
		r.Password = ""
		d.Registry = &r
	}
	return d
}

// WithoutSecrets returns d without the registry password (for files and logs).
func (d Docker) WithoutSecrets() Docker { return d.withoutSecrets() }

// ContainerRunDir is where the run directory appears inside the container.
const ContainerRunDir = "/aml/run"

// ImageRepository is the repository of images built for system-managed
// environments; the tag is the environment key's prefix.
const ImageRepository = "aml-env"

// ImagePython is the interpreter of a built image.
const ImagePython = "/opt/aml/env/bin/python"

// dockerFlag says how one `docker run` flag may be given in arguments.
type dockerFlag struct {
	value bool // takes a value (--flag v or --flag=v)
}

// AllowedDockerFlags are the `docker run` flags `arguments` may use: resource
// limits, labels, variables and names, none of which can undo the container's
// isolation. Anything else goes in raw_arguments.
var AllowedDockerFlags = map[string]dockerFlag{
	"--env": {true}, "-e": {true}, "--label": {true}, "-l": {true},
	"--cpus": {true}, "--cpu-shares": {true}, "--cpuset-cpus": {true}, "--cpuset-mems": {true},
	"--memory": {true}, "-m": {true}, "--memory-swap": {true}, "--memory-reservation": {true},
	"--pids-limit": {true}, "--ulimit": {true}, "--tmpfs": {true}, "--read-only": {false},
	"--hostname": {true}, "-h": {true}, "--add-host": {true}, "--dns": {true}, "--dns-search": {true},
	"--stop-signal": {true}, "--oom-score-adj": {true}, "--platform": {true}, "--pull": {true},
}

// AllowedDockerFlagNames is AllowedDockerFlags sorted, for messages and docs.
func AllowedDockerFlagNames() []string {
	out := make([]string, 0, len(AllowedDockerFlags))
	for k := range AllowedDockerFlags {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ownedDockerFlags are set by the engine itself; a user value would break
// the run (its name, labels, mounts, user, working directory).
var ownedDockerFlags = map[string]string{
	"--name": "the engine names the container after the run", "--rm": "the engine removes the container after reading its exit code",
	"-d": "the run's supervisor stays attached", "--detach": "the run's supervisor stays attached",
	"--user": "the container runs as the host user that owns the run directory", "-u": "the container runs as the host user that owns the run directory",
	"--workdir": "the working directory is the run directory", "-w": "the working directory is the run directory",
	"--network": "use the network attribute", "--net": "use the network attribute",
	"--shm-size": "use the shm_size attribute", "--gpus": "use the gpus attribute",
	"--init": "the engine always runs an init", "--entrypoint": "the program is the run's script or command",
}

var (
	shmPattern     = lazyRegexp(`^[0-9]+[bkmgBKMG]?$`)
	networkPattern = lazyRegexp(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)
	gpusPattern    = lazyRegexp(`^(all|none|[1-9][0-9]{0,2})$`)
)

// ValidateDocker checks the docker section; errors name the attribute, the value
// and what is valid.
func ValidateDocker(d Docker) error {
	if !d.Enabled {
		return nil
	}
	if strings.TrimSpace(d.BaseImage) == "" {
		return &field.Error{Attr: "environment.docker.base_image", Msg: "is required when environment.docker.enabled is true"}
	}
	if strings.HasPrefix(d.BaseImage, "-") || strings.ContainsAny(d.BaseImage, " \t\n") {
		return &field.Error{Attr: "environment.docker.base_image", Msg: fmt.Sprintf("%q is not an image reference (e.g. python:3.11 or registry.example.com/team/img:tag)", d.BaseImage)}
	}
	if d.ShmSize != "" && !shmPattern().MatchString(d.ShmSize) {
		return &field.Error{Attr: "environment.docker.shm_size", Msg: fmt.Sprintf("%q is not a size: use a number with an optional unit b, k, m or g (e.g. 2g)", d.ShmSize)}
	}
	if d.Network != "" && (!networkPattern().MatchString(d.Network) || strings.HasPrefix(d.Network, "container")) {
		return &field.Error{Attr: "environment.docker.network", Msg: fmt.Sprintf("%q is not a network name: use host, none, bridge or the name of a network the engine has (letters, digits, '.', '-', '_'; not container:<id>)", d.Network)}
	}
	if d.GPUs != "" && !gpusPattern().MatchString(d.GPUs) {
		return &field.Error{Attr: "environment.docker.gpus", Msg: fmt.Sprintf("%q is not valid: use all, none or a number of GPUs (1-999)", d.GPUs)}
	}
	for i := 0; i < len(d.Arguments); i++ {
		a := d.Arguments[i]
		attr := fmt.Sprintf("environment.docker.arguments[%d]", i)
		name, _, hasValue := strings.Cut(a, "=")
		if why, ok := ownedDockerFlags[name]; ok {
			return &field.Error{Attr: attr, Msg: fmt.Sprintf("%q cannot be given: %s", a, why)}
		}
		f, ok := AllowedDockerFlags[name]
		if !ok {
			return &field.Error{Attr: attr, Msg: fmt.Sprintf("%q is not an allowed docker run flag; allowed: %s (flags that can undo isolation, such as --privileged, --volume or --ipc=host, go in raw_arguments)", a, strings.Join(AllowedDockerFlagNames(), ", "))}
		}
		value := ""
		if hasValue {
			_, value, _ = strings.Cut(a, "=")
		}
		if f.value && !hasValue {
			if i+1 >= len(d.Arguments) {
				return &field.Error{Attr: attr, Msg: fmt.Sprintf("%q needs a value (%s=VALUE or the value as the next element)", a, name)}
			}
			i++
			value = d.Arguments[i]
		}
		// The engine's own labels find the run's containers; its mount is the
		// run directory.
		if (name == "--label" || name == "-l") && strings.HasPrefix(value, "aml.") {
			return &field.Error{Attr: attr, Msg: fmt.Sprintf("label %q cannot be given: labels aml.* are the engine's (they find the run's containers)", value)}
		}
		if name == "--tmpfs" && (value == ContainerRunDir || strings.HasPrefix(value, ContainerRunDir+"/") || strings.HasPrefix(value, ContainerRunDir+":") || value == "/aml" || strings.HasPrefix(value, "/aml:")) {
			return &field.Error{Attr: attr, Msg: fmt.Sprintf("--tmpfs %q would hide the run directory mounted at %s", value, ContainerRunDir)}
		}
		if !f.value && hasValue {
			return &field.Error{Attr: attr, Msg: fmt.Sprintf("%q takes no value", a)}
		}
	}
	for i, a := range d.RawArguments {
		if name, _, _ := strings.Cut(a, "="); name == "--name" || name == "--rm" || name == "-d" || name == "--detach" {
			return &field.Error{Attr: fmt.Sprintf("environment.docker.raw_arguments[%d]", i), Msg: fmt.Sprintf("%q cannot be given: %s", a, ownedDockerFlags[name])}
		}
	}
	if r := d.Registry; r != nil {
		if strings.TrimSpace(r.Address) == "" || strings.ContainsAny(r.Address, " /\t") {
			return &field.Error{Attr: "environment.docker.registry.address", Msg: fmt.Sprintf("%q is not a registry host (e.g. registry.example.com or registry.example.com:5000)", r.Address)}
		}
		if (r.Username == "") != (r.Password == "") {
			return &field.Error{Attr: "environment.docker.registry.password", Msg: "username and password are set together"}
		}
	}
	return nil
}

// Container describes one containerized run (rank).
type Container struct {
	Name   string            // container name
	Labels map[string]string // --label
	RunDir string            // host run directory, mounted as the working directory
	User   string            // uid:gid on the host
	Env    map[string]string // variables passed with --env (host run paths rewritten)
	Image  string            // image to run (the built image for system-managed)
	// Program is the argv inside the container; the interpreter is already
	// resolved.
	Program  []string
	HostGPUs int    // GPUs the host has
	CPUs     string // --cpuset-cpus from a pool node's assignment
}

// ContainerArgs builds the `docker run` arguments (after "docker") of a run.
// The container is attached (the supervisor's child waits on it), not removed
// on exit (its exit code is read first), and its stdin is closed.
func ContainerArgs(d Docker, c Container) ([]string, error) {
	args := []string{"run", "--name", c.Name, "--init",
		"--volume", c.RunDir + ":" + ContainerRunDir, "--workdir", ContainerRunDir}
	for _, k := range sortedKeys(c.Labels) {
		args = append(args, "--label", k+"="+c.Labels[k])
	}
	if c.User != "" {
		args = append(args, "--user", c.User)
	}
	shm := d.ShmSize
	if shm == "" {
		shm = "2g"
	}
	args = append(args, "--shm-size", shm)
	if d.Network != "" {
		args = append(args, "--network", d.Network)
	}
	gpus, err := GPUArgs(d.GPUs, c.HostGPUs)
	if err != nil {
		return nil, err
	}
	args = append(args, gpus...)
	if c.CPUs != "" {
		args = append(args, "--cpuset-cpus", c.CPUs)
	}
	for _, k := range sortedKeys(c.Env) {
		// Host paths of the run directory become container paths.
		v := strings.ReplaceAll(c.Env[k], c.RunDir, ContainerRunDir)
		args = append(args, "--env", k+"="+v)
	}
	args = append(args, d.Arguments...)
	args = append(args, d.RawArguments...)
	image := c.Image
	if image == "" {
		image = d.BaseImage
	}
	args = append(args, image)
	return append(args, c.Program...), nil
}

// GPUArgs is the --gpus flag for a request on a host with hostGPUs GPUs.
func GPUArgs(request string, hostGPUs int) ([]string, error) {
	switch request {
	case "":
		if hostGPUs > 0 {
			return []string{"--gpus", "all"}, nil
		}
		return nil, nil
	case "none":
		return nil, nil
	}
	if hostGPUs == 0 {
		return nil, &field.Error{Attr: "environment.docker.gpus", Msg: fmt.Sprintf("%q asks for GPUs, but the host has none (nvidia-smi found no GPU)", request)}
	}
	if request == "all" {
		return []string{"--gpus", "all"}, nil
	}
	n, _ := strconv.Atoi(request)
	if n > hostGPUs {
		return nil, &field.Error{Attr: "environment.docker.gpus", Msg: fmt.Sprintf("%q asks for %d GPUs, but the host has %d", request, n, hostGPUs)}
	}
	return []string{"--gpus", request}, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// DockerCLI runs the docker command line; DOCKER_HOST (and the other DOCKER_*
// settings) come from Env, else from this process's environment.
type DockerCLI struct {
	Path string   // the docker binary
	Env  []string // nil: os.Environ()
}

// FindDocker finds the docker CLI on pathEnv.
func FindDocker(pathEnv string) (DockerCLI, error) {
	p, err := lookPathIn("docker", pathEnv)
	if err != nil {
		return DockerCLI{}, fmt.Errorf("docker is not installed (not on PATH %s)", pathEnv)
	}
	return DockerCLI{Path: p}, nil
}

// maxDockerOutput bounds what is kept of one docker command's output.
const maxDockerOutput = 1 << 20

// Run runs one docker command and returns its trimmed output (bounded).
func (c DockerCLI) Run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.Path, args...)
	if c.Env != nil {
		cmd.Env = c.Env
	}
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxDockerOutput - b.Len(); room > 0 {
		if len(p) > room {
			b.Buffer.Write(p[:room])
		} else {
			b.Buffer.Write(p)
		}
	}
	return len(p), nil
}

// DockerInfo is what a probe learns of a host's Docker engine.
type DockerInfo struct {
	ServerVersion string
}

// ProbeDocker asks the engine for its version. Its errors say which part is
// missing: the client, an engine that answers, or the user's permission.
func ProbeDocker(ctx context.Context, pathEnv string) (DockerInfo, error) {
	cli, err := FindDocker(pathEnv)
	if err != nil {
		return DockerInfo{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := cli.Run(ctx, "version", "--format", "{{.Server.Version}}")
	if err != nil || out == "" {
		if strings.Contains(strings.ToLower(out), "permission denied") {
			who := strconv.Itoa(os.Getuid())
			if u := os.Getenv("USER"); u != "" {
				who = u
			}
			return DockerInfo{}, fmt.Errorf("the Docker engine refuses user %s (%s); add the user to the engine socket's group (usually docker) or point DOCKER_HOST at an engine it may use", who, lastLines(out, 2))
		}
		return DockerInfo{}, fmt.Errorf("docker is installed but no Docker engine answers (`docker version`: %s)", lastLines(out, 3))
	}
	return DockerInfo{ServerVersion: lastLines(out, 1)}, nil
}

// CheckDocker reports whether a Docker engine answers on this host for this user.
func CheckDocker(ctx context.Context, pathEnv string) error {
	_, err := ProbeDocker(ctx, pathEnv)
	return err
}

// ImageExists reports whether ref is an image the engine has.
func (c DockerCLI) ImageExists(ctx context.Context, ref string) bool {
	_, err := c.Run(ctx, "image", "inspect", "--format", "{{.Id}}", ref)
	return err == nil
}

// Pull pulls ref with the registry's credentials, when it has any, through a
// DOCKER_CONFIG of its own that is removed afterwards (the user's docker
// configuration is never written). The password is in no argument and no
// message.
func (c DockerCLI) Pull(ctx context.Context, ref string, r *Registry) error {
	env := c.Env
	if env == nil {
		env = os.Environ()
	}
	if r != nil && r.Username != "" {
		dir, err := os.MkdirTemp("", "aml-docker-config-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		auth := base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))
		b, _ := json.Marshal(map[string]any{"auths": map[string]any{r.Address: map[string]string{"auth": auth}}})
		if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
			return err
		}
		env = append(withoutVar(env, "DOCKER_CONFIG"), "DOCKER_CONFIG="+dir)
	}
	cli := DockerCLI{Path: c.Path, Env: env}
	out, err := cli.Run(ctx, "pull", "--quiet", ref)
	if err != nil {
		if r != nil && r.Password != "" {
			out = strings.ReplaceAll(out, r.Password, "***")
		}
		return fmt.Errorf("docker pull %s: %v: %s", ref, err, lastLines(out, 5))
	}
	return nil
}

func withoutVar(env []string, k string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, k+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// ImageCache builds the images of system-managed Docker environments: one per
// environment key (the definition's hash with the base image's id), tagged
// aml-env:<key prefix>, built under an exclusive flock per key in Root (so
// concurrent runs build once) and tagged only after the build succeeded: a
// failed build is never cached. Build context and logs stay on the host.
type ImageCache struct {
	Root   string
	Docker DockerCLI
}

// ImageKey is the cache key of e's image on a base image with id baseID.
func ImageKey(e Environment, baseID string) string {
	d := e.Dock()
	// Only what goes into the image counts: run options (shm, network,
	// flags, credentials) do not.
	def := Environment{Python: e.Python, Docker: &Docker{Enabled: true, BaseImage: d.BaseImage}}
	return Key(def, Platform{OS: "linux", Arch: runtime.GOARCH, ABI: "docker:" + baseID})
}

// ImageTag is the tag of key's image.
func ImageTag(key string) string { return ImageRepository + ":" + dirName(key) }

// Ensure returns the image of e, building it at most once per key.
func (c ImageCache) Ensure(ctx context.Context, e Environment, log io.Writer) (*Result, string, error) {
	d := e.Dock()
	if e.Py().Conda != nil && len(e.Py().Conda.CondaPackages) > 0 {
		return nil, "", &field.Error{Attr: "environment.python.conda_dependencies.conda_packages", Msg: "conda packages are not built into Docker images yet; use pip_packages, or a base image that has them"}
	}
	if !c.Docker.ImageExists(ctx, d.BaseImage) {
		if err := c.Docker.Pull(ctx, d.BaseImage, d.Registry); err != nil {
			return nil, "", &BuildError{Step: "docker pull", Err: err}
		}
	}
	baseID, err := c.Docker.Run(ctx, "image", "inspect", "--format", "{{.Id}}", d.BaseImage)
	if err != nil {
		return nil, "", &BuildError{Step: "docker image inspect", Output: lastLines(baseID, 5), Err: err}
	}
	key := ImageKey(e, baseID)
	tag := ImageTag(key)
	res := &Result{Key: key, Python: ImagePython, Builder: "docker build"}
	if c.Docker.ImageExists(ctx, tag) {
		res.CacheHit = true
		return res, tag, nil
	}
	if err := os.MkdirAll(c.Root, 0o755); err != nil {
		return nil, "", err
	}
	unlock, err := lockFile(ctx, filepath.Join(c.Root, dirName(key)+".image.lock"), syscall.LOCK_EX)
	if err != nil {
		return nil, "", fmt.Errorf("waiting for the image build lock: %w", err)
	}
	defer unlock()
	if c.Docker.ImageExists(ctx, tag) { // built by someone else while we waited
		res.CacheHit = true
		return res, tag, nil
	}
	buildDir, err := os.MkdirTemp(c.Root, "image-build-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(buildDir)
	ctxDir := filepath.Join(buildDir, "context")
	if err := os.Mkdir(ctxDir, 0o755); err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(Dockerfile(e, key)), 0o644); err != nil {
		return nil, "", err
	}
	start := time.Now()
	iid := filepath.Join(buildDir, "iid")
	argv := []string{c.Docker.Path, "build", "--network", "host", "--iidfile", iid, "--label", "aml.env_key=" + key, ctxDir}
	env := c.Docker.Env
	if env == nil {
		env = os.Environ()
	}
	// The classic builder is in every engine; BuildKit needs the buildx plugin.
	b := builder{log: log, env: append(withoutVar(env, "DOCKER_BUILDKIT"), "DOCKER_BUILDKIT=0")}
	if err := b.run(ctx, "docker build", argv...); err != nil {
		return nil, "", err
	}
	id, err := os.ReadFile(iid)
	if err != nil || len(bytes.TrimSpace(id)) == 0 {
		return nil, "", &BuildError{Step: "docker build", Err: errors.New("the build wrote no image id")}
	}
	// The tag is the commit point.
	if out, err := c.Docker.Run(ctx, "tag", string(bytes.TrimSpace(id)), tag); err != nil {
		return nil, "", &BuildError{Step: "docker tag", Output: lastLines(out, 5), Err: err}
	}
	res.BuildSeconds = time.Since(start).Seconds()
	fmt.Fprintf(log, "aml: tagged %s as %s\n", bytes.TrimSpace(id), tag)
	return res, tag, nil
}

// Dockerfile is the build recipe of e's image: a virtual environment of the base
// image's Python at /opt/aml/env with the pinned packages, and pip freeze.
func Dockerfile(e Environment, key string) string {
	c := CondaDependencies{}
	if e.Py().Conda != nil {
		c = *e.Py().Conda
	}
	python := "python3"
	if c.PythonVersion != "" {
		python = "python" + c.PythonVersion
	}
	var b strings.Builder
	fmt.Fprintf(&b, "FROM %s\n", e.Dock().BaseImage)
	fmt.Fprintf(&b, "ENV PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=%d PIP_RETRIES=1\n", HTTPTimeoutSeconds)
	fmt.Fprintf(&b, "RUN %s -m venv /opt/aml/env\n", shellJoin([]string{python}))
	if len(c.PipPackages) > 0 {
		install := append(append([]string{ImagePython, "-m", "pip", "install", "--no-input"}, IndexArgs(c.PipOptions)...), c.PipPackages...)
		fmt.Fprintf(&b, "RUN %s\n", shellJoin(install))
	}
	fmt.Fprintf(&b, "RUN %s -m pip freeze --all > /opt/aml/packages.txt\n", ImagePython)
	fmt.Fprintf(&b, "ENV VIRTUAL_ENV=/opt/aml/env PATH=/opt/aml/env/bin:$PATH\n")
	fmt.Fprintf(&b, "LABEL aml.env_key=%q\n", key)
	return b.String()
}
