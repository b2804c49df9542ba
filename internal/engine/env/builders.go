package env

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Tools are the environment builders found on a host.
type Tools struct {
	UV    string // uv: the fast path
	Conda string // conda, mamba or micromamba, for conda_packages
}

// CondaTools are looked for in this order.
var CondaTools = []string{"micromamba", "mamba", "conda"}

// DiscoverTools finds the builders on pathEnv.
func DiscoverTools(pathEnv string) Tools {
	var t Tools
	if p, err := lookPathIn("uv", pathEnv); err == nil && works(p, "--version") {
		t.UV = p
	}
	t.Conda = findConda(pathEnv)
	return t
}

// discoverTools is DiscoverTools with a working uv kept by pr (probes.go).
func discoverTools(pathEnv string, pr *prober) Tools {
	var t Tools
	if p, err := lookPathIn("uv", pathEnv); err == nil && pr.works(p, "--version") {
		t.UV = p
	}
	t.Conda = findConda(pathEnv)
	return t
}

// findConda looks for the conda tools on pathEnv (a lookup, nothing is run).
func findConda(pathEnv string) string {
	for _, name := range CondaTools {
		if p, err := lookPathIn(name, pathEnv); err == nil {
			return p
		}
	}
	return ""
}

// works filters out shims (pyenv's among them) that exist but cannot run.
func works(path string, args ...string) bool {
	return exec.Command(path, args...).Run() == nil
}

// HTTPTimeoutSeconds bounds each request to a package index, so an index that does
// not answer fails the build in bounded time.
const HTTPTimeoutSeconds = 20

func buildEnv(pathEnv string) []string {
	env := []string{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH", k == "VIRTUAL_ENV", k == "PYTHONPATH", k == "PYTHONHOME", k == "CONDA_PREFIX":
			continue
		case strings.HasPrefix(k, "PIP_") || strings.HasPrefix(k, "UV_"):
			continue // the run configuration, not the host, decides index settings
		}
		env = append(env, kv)
	}
	return append(env,
		"PATH="+pathEnv,
		"PIP_NO_INPUT=1",
		"PIP_DISABLE_PIP_VERSION_CHECK=1",
		fmt.Sprintf("PIP_DEFAULT_TIMEOUT=%d", HTTPTimeoutSeconds),
		"PIP_RETRIES=1",
		"UV_PYTHON_DOWNLOADS=never",
		fmt.Sprintf("UV_HTTP_TIMEOUT=%d", HTTPTimeoutSeconds),
		"UV_HTTP_RETRIES=1", // as PIP_RETRIES: uv's default 3 makes a dead index cost 4 timeouts
		"UV_NO_PROGRESS=1",
	)
}

// IndexArgs turns pip_options into pip/uv command-line options.
func IndexArgs(o PipOptions) []string {
	var args []string
	if o.NoIndex {
		args = append(args, "--no-index")
	} else if o.IndexURL != "" {
		args = append(args, "--index-url", o.IndexURL)
	}
	if !o.NoIndex {
		for _, u := range o.ExtraIndexURLs {
			args = append(args, "--extra-index-url", u)
		}
	}
	for _, f := range o.FindLinks {
		args = append(args, "--find-links", f)
	}
	return args
}

type builder struct {
	tools Tools
	dir   string
	log   io.Writer
	env   []string
}

func (b builder) python() string { return filepath.Join(b.dir, "bin", "python") }

// run executes one build step, keeping the tail of its output for the error.
func (b builder) run(ctx context.Context, step string, argv ...string) error {
	fmt.Fprintf(b.log, "$ %s\n", strings.Join(argv, " "))
	var tail bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = b.env
	cmd.Stdout = io.MultiWriter(b.log, &tail)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return &BuildError{Step: step, Output: lastLines(tail.String(), 20), Err: err}
	}
	return nil
}

// uv builds without --seed: seeding fetches pip from PyPI whatever the index
// settings say, which breaks offline and mirror-only hosts. uv environments
// therefore have no pip of their own (as with plain `uv venv`).
func (b builder) uv(ctx context.Context, base Interpreter, c CondaDependencies) error {
	if err := b.run(ctx, "uv venv", b.tools.UV, "venv", "--quiet", "--python", base.Path, b.dir); err != nil {
		return err
	}
	if len(c.PipPackages) == 0 {
		return nil
	}
	args := append([]string{b.tools.UV, "pip", "install", "--python", b.python()}, IndexArgs(c.PipOptions)...)
	return b.run(ctx, "uv pip install", append(args, c.PipPackages...)...)
}

func (b builder) venvPip(ctx context.Context, base Interpreter, c CondaDependencies) error {
	if err := b.run(ctx, "python -m venv", base.Path, "-m", "venv", b.dir); err != nil {
		return err
	}
	if len(c.PipPackages) == 0 {
		return nil
	}
	args := append([]string{b.python(), "-m", "pip", "install", "--no-input"}, IndexArgs(c.PipOptions)...)
	return b.run(ctx, "pip install", append(args, c.PipPackages...)...)
}

func (b builder) conda(ctx context.Context, c CondaDependencies) error {
	args := []string{b.tools.Conda, "create", "--yes", "--quiet", "--prefix", b.dir}
	for _, ch := range c.Channels {
		args = append(args, "--channel", ch)
	}
	if len(c.Channels) > 0 {
		args = append(args, "--override-channels")
	}
	pyPkg := "python"
	if c.PythonVersion != "" {
		pyPkg = "python=" + c.PythonVersion
	}
	args = append(append(args, pyPkg, "pip"), c.CondaPackages...)
	if err := b.run(ctx, filepath.Base(b.tools.Conda)+" create", args...); err != nil {
		return err
	}
	if len(c.PipPackages) == 0 {
		return nil
	}
	pip := append([]string{b.python(), "-m", "pip", "install", "--no-input"}, IndexArgs(c.PipOptions)...)
	return b.run(ctx, "pip install", append(pip, c.PipPackages...)...)
}

// freeze records the installed packages, the environment's manifest.
func (b builder) freeze(ctx context.Context, uv bool) error {
	argv := []string{b.python(), "-m", "pip", "freeze", "--all"}
	if uv {
		argv = []string{b.tools.UV, "pip", "freeze", "--python", b.python()}
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = b.env
	out, err := cmd.Output()
	if err != nil {
		return &BuildError{Step: "pip freeze", Err: err}
	}
	return os.WriteFile(filepath.Join(b.dir, packagesFile), out, 0o644)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
