package env

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Interpreter is one Python found on a host.
type Interpreter struct {
	Path    string // as found on PATH
	Version string // e.g. "3.11.7"
}

var pythonName = regexp.MustCompile(`^python(3(\.\d+)?)?$`)

// DiscoverInterpreters lists the Pythons on pathEnv (python, python3, python3.N),
// one per version, in PATH order.
func DiscoverInterpreters(ctx context.Context, pathEnv string) []Interpreter {
	var out []Interpreter
	seen := map[string]bool{}
	for _, dir := range filepath.SplitList(pathEnv) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, de := range entries {
			if !pythonName.MatchString(de.Name()) {
				continue
			}
			p := filepath.Join(dir, de.Name())
			v, err := pythonVersion(ctx, p)
			if err != nil || seen[v] {
				continue
			}
			seen[v] = true
			out = append(out, Interpreter{Path: p, Version: v})
		}
	}
	return out
}

func pythonVersion(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])").Output()
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// VersionMatches reports whether a full version satisfies a requested one
// ("3.11" matches "3.11.7"; "3" matches any 3.x).
func VersionMatches(want, have string) bool {
	return want == "" || have == want || strings.HasPrefix(have, want+".")
}

// FindInterpreter picks the first Python on pathEnv that provides want (any
// python3 when want is empty); the error lists what was found.
func FindInterpreter(ctx context.Context, want, pathEnv string) (Interpreter, error) {
	if want == "" {
		for _, name := range []string{"python3", "python"} {
			if p, err := lookPathIn(name, pathEnv); err == nil {
				if v, err := pythonVersion(ctx, p); err == nil && strings.HasPrefix(v, "3.") {
					return Interpreter{Path: p, Version: v}, nil
				}
			}
		}
	}
	found := DiscoverInterpreters(ctx, pathEnv)
	for _, in := range found {
		if VersionMatches(want, in.Version) && strings.HasPrefix(in.Version, "3.") {
			return in, nil
		}
	}
	versions := make([]string, 0, len(found))
	for _, in := range found {
		versions = append(versions, in.Version+" ("+in.Path+")")
	}
	slices.Sort(versions)
	if len(versions) == 0 {
		versions = []string{"none"}
	}
	return Interpreter{}, &FieldError{"environment.python.conda_dependencies.python_version",
		fmt.Sprintf("no interpreter on this host provides Python %q; found: %s", want, strings.Join(versions, ", "))}
}

func lookPathIn(name, pathEnv string) (string, error) {
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			continue
		}
		if p, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}
