package env

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/field"
)

// Interpreter is one Python found on a host.
type Interpreter struct {
	Path    string // as found on PATH
	Version string // e.g. "3.11.7"
	ABI     string // e.g. "cpython-311-x86_64-linux-gnu"
}

var pythonName = lazyRegexp(`^python(3(\.\d+)?)?$`)

// DiscoverInterpreters lists the Pythons on pathEnv (python, python3, python3.N),
// one per version, in PATH order.
func DiscoverInterpreters(ctx context.Context, pathEnv string) []Interpreter {
	return discoverInterpreters(ctx, pathEnv, nil)
}

func discoverInterpreters(ctx context.Context, pathEnv string, pr *prober) []Interpreter {
	var paths []string
	for _, dir := range filepath.SplitList(pathEnv) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, de := range entries {
			if pythonName().MatchString(de.Name()) {
				paths = append(paths, filepath.Join(dir, de.Name()))
			}
		}
	}
	// Asked all at once (each mostly waits for its start-up), kept in PATH order.
	found := make([]*Interpreter, len(paths))
	var wg sync.WaitGroup
	for i, p := range paths {
		wg.Go(func() {
			if in, err := pr.python(ctx, p); err == nil {
				found[i] = &in
			}
		})
	}
	wg.Wait()
	var out []Interpreter
	seen := map[string]bool{}
	for _, in := range found {
		if in == nil || seen[in.Version] {
			continue
		}
		seen[in.Version] = true
		out = append(out, *in)
	}
	return out
}

// probePython asks an interpreter for its version, ABI and own binary
// (sys.executable) in one start-up.
func probePython(ctx context.Context, path string) (Interpreter, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-c",
		"import sys, sysconfig; print('%d.%d.%d' % sys.version_info[:3]); "+
			"print(sysconfig.get_config_var('SOABI') or '%s-%d%d' % (sys.implementation.name, *sys.version_info[:2])); "+
			"print(sys.executable)").Output()
	if err != nil {
		return Interpreter{}, "", err
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for len(lines) < 3 {
		lines = append(lines, "")
	}
	return Interpreter{Path: path, Version: strings.TrimSpace(lines[0]), ABI: strings.TrimSpace(lines[1])}, strings.TrimSpace(lines[2]), nil
}

// VersionMatches reports whether a full version satisfies a requested one
// ("3.11" matches "3.11.7"; "3" matches any 3.x).
func VersionMatches(want, have string) bool {
	return want == "" || have == want || strings.HasPrefix(have, want+".")
}

// FindInterpreter picks the first Python on pathEnv that provides want (any
// python3 when want is empty); the error lists what was found.
func FindInterpreter(ctx context.Context, want, pathEnv string) (Interpreter, error) {
	return findInterpreter(ctx, want, pathEnv, nil)
}

// findInterpreter is FindInterpreter with probe answers kept by pr (see
// probes.go): a cache hit starts no interpreter when nothing about it changed.
func findInterpreter(ctx context.Context, want, pathEnv string, pr *prober) (Interpreter, error) {
	// The usual names first: one start-up in the common case (a cache hit
	// should not probe every python on PATH).
	names := []string{"python3", "python"}
	if want != "" && strings.Count(want, ".") >= 1 {
		major, rest, _ := strings.Cut(want, ".")
		minor, _, _ := strings.Cut(rest, ".")
		names = append([]string{"python" + major + "." + minor}, names...)
	}
	for _, name := range names {
		if p, err := lookPathIn(name, pathEnv); err == nil {
			if in, err := pr.python(ctx, p); err == nil && strings.HasPrefix(in.Version, "3.") && VersionMatches(want, in.Version) {
				return in, nil
			}
		}
	}
	found := discoverInterpreters(ctx, pathEnv, pr)
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
	return Interpreter{}, &field.Error{Attr: "environment.python.conda_dependencies.python_version", Msg: fmt.Sprintf("no interpreter on this host provides Python %q; found: %s", want, strings.Join(versions, ", "))}
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
