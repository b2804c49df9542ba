// Package env describes a run's Python environment, hashes it, and resolves it on
// a target (user-managed interpreters today; system-managed builds later).
package env

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/openaml/terraform-provider-aml/internal/engine/field"
)

// Environment is the environment section of a run configuration.
// Nil sections are "not configured" and take defaults, so a stored configuration
// reads back exactly as it was written.
type Environment struct {
	Python *Python `json:"python,omitempty"`
	Docker *Docker `json:"docker,omitempty"`
}

// Py returns the Python section or its defaults (system-managed, like Azure).
func (e Environment) Py() Python {
	if e.Python == nil {
		return Python{}
	}
	return *e.Python
}

// Dock returns the Docker section or its defaults (disabled).
func (e Environment) Dock() Docker {
	if e.Docker == nil {
		return Docker{}
	}
	return *e.Docker
}

// Python says who manages the interpreter and which packages it needs.
type Python struct {
	UserManagedDependencies bool               `json:"user_managed_dependencies"`
	InterpreterPath         string             `json:"interpreter_path"`
	Conda                   *CondaDependencies `json:"conda_dependencies,omitempty"`
}

// CondaDependencies mirrors Azure's CondaDependencies.
type CondaDependencies struct {
	PythonVersion string     `json:"python_version,omitempty"`
	Channels      []string   `json:"channels,omitempty"`
	CondaPackages []string   `json:"conda_packages,omitempty"`
	PipPackages   []string   `json:"pip_packages,omitempty"`
	PipOptions    PipOptions `json:"pip_options"`
}

// PipOptions are the index settings given to pip or uv.
type PipOptions struct {
	IndexURL       string   `json:"index_url,omitempty"`
	ExtraIndexURLs []string `json:"extra_index_urls,omitempty"`
	FindLinks      []string `json:"find_links,omitempty"`
	// NoIndex installs from find_links only (pip's --no-index).
	NoIndex bool `json:"no_index,omitempty"`
}

// DefaultInterpreter is used when a user-managed environment names none.
const DefaultInterpreter = "python3"

// Validate checks rules that span fields.
func (e Environment) Validate() error {
	if err := ValidateDocker(e.Dock()); err != nil {
		return err
	}
	if py := e.Py(); py.UserManagedDependencies && py.Conda != nil {
		// Silently ignoring the packages would run without them.
		return &field.Error{Attr: "environment.python.conda_dependencies", Msg: "is set, but environment.python.user_managed_dependencies = true runs interpreter_path as is and installs nothing; " +
			"remove conda_dependencies, or set user_managed_dependencies = false to have them installed"}
	}
	if c := e.Py().Conda; c != nil {
		for i, p := range c.PipPackages {
			attr := fmt.Sprintf("environment.python.conda_dependencies.pip_packages[%d]", i)
			if strings.HasPrefix(strings.TrimSpace(p), "-") {
				return &field.Error{Attr: attr, Msg: fmt.Sprintf("%q looks like a pip option; put index settings in pip_options", p)}
			}
			if err := CheckRequirement(p); err != nil {
				return &field.Error{Attr: attr, Msg: fmt.Sprintf("%q is not a PEP 508 requirement: it %v", p, err)}
			}
		}
	}
	return nil
}

// Hash identifies the environment's definition: equal hashes mean an environment
// built for one can serve the other. Package order does not count; channel order
// does (it is conda's priority order).
func (e Environment) Hash() string {
	py := e.Py()
	c := CondaDependencies{}
	if py.Conda != nil {
		c = *py.Conda
	}
	norm := func(in []string) []string {
		out := make([]string, 0, len(in))
		for _, s := range in {
			out = append(out, strings.Join(strings.Fields(s), ""))
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	canonical := struct {
		UserManaged bool     `json:"user_managed"`
		Interpreter string   `json:"interpreter,omitempty"`
		Python      string   `json:"python,omitempty"`
		Channels    []string `json:"channels"`
		Conda       []string `json:"conda"`
		Pip         []string `json:"pip"`
		Index       string   `json:"index,omitempty"`
		Extra       []string `json:"extra"`
		FindLinks   []string `json:"find_links"`
		NoIndex     bool     `json:"no_index,omitempty"`
		Docker      Docker   `json:"docker"`
	}{
		UserManaged: py.UserManagedDependencies,
		Python:      c.PythonVersion,
		Channels:    c.Channels,
		Conda:       norm(c.CondaPackages),
		Pip:         norm(c.PipPackages),
		Index:       c.PipOptions.IndexURL,
		Extra:       norm(c.PipOptions.ExtraIndexURLs),
		FindLinks:   norm(c.PipOptions.FindLinks),
		NoIndex:     c.PipOptions.NoIndex,
		Docker:      e.Dock().withoutSecrets(),
	}
	if py.UserManagedDependencies {
		canonical.Interpreter = py.InterpreterPath
		if canonical.Interpreter == "" {
			canonical.Interpreter = DefaultInterpreter
		}
	}
	b, _ := json.Marshal(canonical)
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ErrSystemManaged is returned when a user-managed interpreter is asked of a
// system-managed environment.
var ErrSystemManaged = errors.New("the environment is system-managed (user_managed_dependencies = false), so the provider builds its interpreter; to run an existing Python instead set user_managed_dependencies = true and interpreter_path")

// Launch says how a run on a host gets its Python.
type Launch struct {
	Interpreter string       `json:"interpreter,omitempty"` // user-managed: the resolved interpreter
	System      *Environment `json:"system,omitempty"`      // system-managed: built (or found cached) before the run
	Docker      *Docker      `json:"docker,omitempty"`      // run inside this image
}

// PrepareLocal checks, before anything is submitted, that this host can provide
// the environment, and says how. Errors are *field.Error naming the attribute.
func PrepareLocal(ctx context.Context, e Environment, pathEnv string) (Launch, error) {
	if d := e.Dock(); d.Enabled {
		return PrepareDocker(ctx, e, pathEnv)
	}
	if e.Py().UserManagedDependencies {
		interp, err := ResolveLocal(e, pathEnv)
		return Launch{Interpreter: interp}, err
	}
	if err := Precheck(ctx, e, pathEnv); err != nil {
		return Launch{}, err
	}
	return Launch{System: &e}, nil
}

// PrepareDocker checks that this host's Docker engine answers (DOCKER_HOST is
// honoured) and says how the run gets its Python: user-managed, the image's own
// interpreter (interpreter_path, default python3); system-managed, an image
// built once per environment key FROM base_image.
func PrepareDocker(ctx context.Context, e Environment, pathEnv string) (Launch, error) {
	d := e.Dock()
	if err := CheckDocker(ctx, pathEnv); err != nil {
		return Launch{}, &field.Error{Attr: "environment.docker.enabled", Msg: fmt.Sprintf("Docker runs need a Docker engine on the target: %v", err)}
	}
	py := e.Py()
	if py.UserManagedDependencies {
		interp := py.InterpreterPath
		if interp == "" {
			interp = DefaultInterpreter
		}
		return Launch{Docker: &d, Interpreter: interp}, nil
	}
	if py.Conda != nil && len(py.Conda.CondaPackages) > 0 {
		return Launch{}, &field.Error{Attr: "environment.python.conda_dependencies.conda_packages", Msg: "conda packages are not built into Docker images yet; use pip_packages, or a base_image that has them with user_managed_dependencies = true"}
	}
	return Launch{Docker: &d, System: &e}, nil
}

// Precheck finds the tools a system-managed build needs, without building.
func Precheck(ctx context.Context, e Environment, pathEnv string) error {
	c := CondaDependencies{}
	if e.Py().Conda != nil {
		c = *e.Py().Conda
	}
	if len(c.CondaPackages) > 0 {
		if DiscoverTools(pathEnv).Conda == "" {
			return condaMissing(c.CondaPackages, pathEnv)
		}
		return nil
	}
	_, err := FindInterpreter(ctx, c.PythonVersion, pathEnv)
	return err
}

func condaMissing(pkgs []string, pathEnv string) error {
	return &field.Error{Attr: "environment.python.conda_dependencies.conda_packages", Msg: fmt.Sprintf("conda packages %s need %s on the target, and none was found on PATH (%s); install one or move the packages to pip_packages",
		strings.Join(pkgs, ", "), strings.Join(CondaTools, ", "), pathEnv)}
}

// ResolveLocal finds a user-managed interpreter on the engine host. pathEnv is
// the PATH the run will see.
func ResolveLocal(e Environment, pathEnv string) (string, error) {
	if e.Dock().Enabled {
		return "", &field.Error{Attr: "environment.docker.enabled", Msg: "Docker runs are not supported by this release yet; set enabled = false"}
	}
	py := e.Py()
	if !py.UserManagedDependencies {
		return "", &field.Error{Attr: "environment.python.user_managed_dependencies", Msg: ErrSystemManaged.Error()}
	}
	interp := py.InterpreterPath
	if interp == "" {
		interp = DefaultInterpreter
	}
	if strings.ContainsRune(interp, filepath.Separator) {
		if _, err := exec.LookPath(interp); err != nil {
			return "", &field.Error{Attr: "environment.python.interpreter_path", Msg: fmt.Sprintf("%q is not an executable file on this machine (%v)", interp, unwrapExec(err))}
		}
		return filepath.Abs(interp)
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			continue
		}
		cand := filepath.Join(dir, interp)
		if p, err := exec.LookPath(cand); err == nil {
			return p, nil
		}
	}
	return "", &field.Error{Attr: "environment.python.interpreter_path", Msg: fmt.Sprintf("%q was not found on PATH (%s)", interp, pathEnv)}
}

func unwrapExec(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}
