package env_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/field"

	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	dockertest "github.com/openaml/terraform-provider-aml/internal/testutil/docker"
	testwheel "github.com/openaml/terraform-provider-aml/internal/testutil/wheel"
)

// ensureChildEnv, when set, makes the test binary run one Cache.Ensure (another
// process racing for the same key) and print a childResult as JSON.
const (
	ensureChildEnv     = "AML_TEST_ENSURE_ROOT"
	ensureChildDefEnv  = "AML_TEST_ENSURE_DEFINITION"
	ensureChildPathEnv = "AML_TEST_ENSURE_PATH"
)

type childResult struct {
	Result *env.Result `json:"result"`
	Error  string      `json:"error"`
	Log    string      `json:"log"`
}

func TestMain(m *testing.M) {
	if root := os.Getenv(ensureChildEnv); root != "" {
		os.Exit(ensureChild(root))
	}
	code := m.Run()
	dockertest.Stop()
	os.Exit(code)
}

func ensureChild(root string) int {
	var def env.Environment
	if err := json.Unmarshal([]byte(os.Getenv(ensureChildDefEnv)), &def); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log bytes.Buffer
	res, err := env.Cache{Root: root}.Ensure(ctx, def, os.Getenv(ensureChildPathEnv), &log)
	out := childResult{Result: res, Log: log.String()}
	if err != nil {
		out.Error = err.Error()
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 2
	}
	return 0
}

// --- fixtures ---------------------------------------------------------------------

// wheel writes name==version into dir (see testutil/wheel).
func wheel(t *testing.T, dir, name, version string, requires ...string) {
	t.Helper()
	if err := testwheel.Write(dir, name, version, requires...); err != nil {
		t.Fatal(err)
	}
}

// wheels is a find_links directory with tinypkg 1.0 and 2.0 and otherpkg 1.0
// (which requires tinypkg==1.0).
func wheels(t *testing.T) string { return testwheel.Dir(t) }

// offline is a system-managed environment installing pkgs from findLinks only.
func offline(findLinks string, pkgs ...string) env.Environment {
	return env.Environment{Python: &env.Python{Conda: &env.CondaDependencies{
		PipPackages: pkgs,
		PipOptions:  env.PipOptions{FindLinks: []string{findLinks}, NoIndex: true},
	}}}
}

var (
	toolsOnce sync.Once
	realPy    string
	realUV    string
	toolsErr  error
	uvErr     error
)

// realTools finds the real python3 and uv binaries behind any version-manager
// shim (pyenv's shims are bash scripts; some do not run at all).
func realTools() {
	toolsOnce.Do(func() {
		out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
		if err != nil {
			toolsErr = fmt.Errorf("python3 does not run: %v", err)
			return
		}
		realPy, toolsErr = filepath.EvalSymlinks(strings.TrimSpace(string(out)))
		if toolsErr != nil {
			return
		}
		// The uv package on PyPI knows where its binary is.
		out, err = exec.Command(realPy, "-c", "import uv; print(uv.find_uv_bin())").Output()
		if err != nil {
			if p, lerr := exec.LookPath("uv"); lerr == nil && exec.Command(p, "--version").Run() == nil {
				realUV = p
				return
			}
			uvErr = fmt.Errorf("uv is not installed (neither the uv Python package nor uv on PATH): %v", err)
			return
		}
		realUV, uvErr = filepath.EvalSymlinks(strings.TrimSpace(string(out)))
		if uvErr == nil {
			uvErr = exec.Command(realUV, "--version").Run()
		}
	})
}

func linkDir(t *testing.T, links map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// pipPath is a PATH with python3 and nothing else: no uv, no conda.
func pipPath(t *testing.T) string {
	t.Helper()
	realTools()
	if toolsErr != nil {
		t.Skipf("no usable python3: %v", toolsErr)
	}
	return linkDir(t, map[string]string{"python3": realPy})
}

// uvPath is a PATH with python3 and uv.
func uvPath(t *testing.T) string {
	t.Helper()
	py := pipPath(t)
	if uvErr != nil {
		t.Skipf("uv is not available: %v", uvErr)
	}
	return linkDir(t, map[string]string{"uv": realUV}) + string(os.PathListSeparator) + py
}

type builderCase struct {
	name string // Result.Builder
	path func(*testing.T) string
}

var builderCases = []builderCase{{"uv", uvPath}, {"venv+pip", pipPath}}

// forEachBuilder runs f in a parallel subtest for uv and for venv+pip.
func forEachBuilder(t *testing.T, f func(t *testing.T, pathEnv, builder string)) {
	for _, bc := range builderCases {
		t.Run(bc.name, func(t *testing.T) {
			t.Parallel()
			f(t, bc.path(t), bc.name)
		})
	}
}

// forEachBuilderAtOnce is forEachBuilder for tests that mostly wait: both
// subtests run at once but take one of go test's -parallel slots between them.
func forEachBuilderAtOnce(t *testing.T, f func(t *testing.T, pathEnv, builder string)) {
	var wg sync.WaitGroup
	for _, bc := range builderCases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(bc.name, func(t *testing.T) { f(t, bc.path(t), bc.name) })
		}()
	}
	wg.Wait()
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func importVersion(t *testing.T, python, module string) string {
	t.Helper()
	out, err := exec.Command(python, "-c", "import "+module+"; print("+module+".__version__)").CombinedOutput()
	if err != nil {
		t.Fatalf("importing %s with %s: %v\n%s", module, python, err, out)
	}
	return strings.TrimSpace(string(out))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// countCommands counts the "$ ..." command lines of a build log that contain word
// (" venv " matches both `uv venv` and `python -m venv`).
func countCommands(log, word string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, "$ ") && strings.Contains(line, word) {
			n++
		}
	}
	return n
}

// cacheEntries lists the names in a cache root.
func cacheEntries(t *testing.T, root string) []string {
	t.Helper()
	des, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// assertNoEnvironments checks a cache root holds lock files only (no half-built env).
func assertNoEnvironments(t *testing.T, root string) {
	t.Helper()
	for _, name := range cacheEntries(t, root) {
		if !strings.HasSuffix(name, ".lock") {
			t.Errorf("cache root holds %q after a failed build; want lock files only", name)
		}
	}
}

func buildError(t *testing.T, err error) *env.BuildError {
	t.Helper()
	var be *env.BuildError
	if !errors.As(err, &be) {
		t.Fatalf("err = %v (%T), want *env.BuildError", err, err)
	}
	if n := strings.Count(err.Error(), "\n") + 1; n > 25 {
		t.Errorf("error has %d lines, want the tail only (<= 25):\n%s", n, err)
	}
	return be
}

// --- tests ------------------------------------------------------------------------

func TestEnsureBuildsOnceAndReuses(t *testing.T) {
	t.Parallel()
	forEachBuilder(t, func(t *testing.T, pathEnv, builder string) {
		ctx := ctxFor(t, 2*time.Minute)
		links := wheels(t)
		cache := env.Cache{Root: filepath.Join(t.TempDir(), "envs")}

		var log bytes.Buffer
		a, err := cache.Ensure(ctx, offline(links, "tinypkg==1.0", "otherpkg==1.0"), pathEnv, &log)
		if err != nil {
			t.Fatalf("Ensure: %v\nlog:\n%s", err, log.String())
		}
		if a.CacheHit || a.BuildSeconds <= 0 || a.Builder != builder {
			t.Errorf("first Ensure = %+v, want a %s build with BuildSeconds > 0", a, builder)
		}
		if !strings.HasPrefix(a.Key, "sha256:") || filepath.Dir(a.Dir) != cache.Root || a.Python != filepath.Join(a.Dir, "bin", "python") {
			t.Errorf("result paths: %+v", a)
		}
		if countCommands(log.String(), " venv ") != 1 {
			t.Errorf("build log does not show one venv creation:\n%s", log.String())
		}
		if v := importVersion(t, a.Python, "tinypkg"); v != "1.0" {
			t.Errorf("tinypkg.__version__ = %q, want 1.0", v)
		}
		pkgs := readFile(t, filepath.Join(a.Dir, "packages.txt"))
		for _, want := range []string{"tinypkg==1.0", "otherpkg==1.0"} {
			if !strings.Contains(pkgs, want) {
				t.Errorf("packages.txt lacks %s:\n%s", want, pkgs)
			}
		}
		if _, err := os.Stat(filepath.Join(a.Dir, ".complete")); err != nil {
			t.Errorf("no commit marker: %v", err)
		}
		dirBefore, _ := os.Stat(a.Dir)
		pkgsBefore, _ := os.Stat(filepath.Join(a.Dir, "packages.txt"))

		// Same definition, other order and spacing: the same environment, untouched.
		var log2 bytes.Buffer
		hit, err := cache.Ensure(ctx, offline(links, " otherpkg == 1.0", "tinypkg==1.0 "), pathEnv, &log2)
		if err != nil {
			t.Fatal(err)
		}
		if !hit.CacheHit || hit.Key != a.Key || hit.Dir != a.Dir || hit.BuildSeconds != 0 {
			t.Errorf("second Ensure = %+v, want a cache hit on %s", hit, a.Key)
		}
		if log2.Len() != 0 {
			t.Errorf("a cache hit wrote to the build log:\n%s", log2.String())
		}
		dirAfter, _ := os.Stat(a.Dir)
		pkgsAfter, _ := os.Stat(filepath.Join(a.Dir, "packages.txt"))
		if !dirAfter.ModTime().Equal(dirBefore.ModTime()) || !pkgsAfter.ModTime().Equal(pkgsBefore.ModTime()) {
			t.Errorf("a cache hit modified the environment (dir mtime %v -> %v, packages.txt %v -> %v)",
				dirBefore.ModTime(), dirAfter.ModTime(), pkgsBefore.ModTime(), pkgsAfter.ModTime())
		}
		if got := readFile(t, filepath.Join(a.Dir, "packages.txt")); got != pkgs {
			t.Errorf("packages.txt changed on a hit")
		}

		// Another pin is another environment, next to the first.
		b, err := cache.Ensure(ctx, offline(links, "tinypkg==2.0"), pathEnv, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if b.CacheHit || b.Key == a.Key || b.Dir == a.Dir {
			t.Errorf("tinypkg==2.0 = %+v, want a new build beside %s", b, a.Dir)
		}
		if v := importVersion(t, b.Python, "tinypkg"); v != "2.0" {
			t.Errorf("tinypkg.__version__ = %q, want 2.0", v)
		}
		if v := importVersion(t, a.Python, "tinypkg"); v != "1.0" {
			t.Errorf("first environment now has tinypkg %q", v)
		}
	})
}

func TestEnsureConcurrentGoroutines(t *testing.T) {
	t.Parallel()
	forEachBuilder(t, func(t *testing.T, pathEnv, builder string) {
		ctx := ctxFor(t, 2*time.Minute)
		cache := env.Cache{Root: t.TempDir()}
		def := offline(wheels(t), "tinypkg==1.0")
		const n = 4
		results := make([]*env.Result, n)
		errs := make([]error, n)
		logs := make([]bytes.Buffer, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = cache.Ensure(ctx, def, pathEnv, &logs[i])
			}()
		}
		wg.Wait()
		built, venvs := 0, 0
		for i := 0; i < n; i++ {
			if errs[i] != nil {
				t.Fatalf("Ensure %d: %v", i, errs[i])
			}
			if !results[i].CacheHit {
				built++
			}
			if results[i].Key != results[0].Key || results[i].Dir != results[0].Dir {
				t.Errorf("result %d = %+v, result 0 = %+v", i, results[i], results[0])
			}
			venvs += countCommands(logs[i].String(), " venv ")
		}
		if built != 1 || venvs != 1 {
			t.Errorf("%d goroutines: %d builds (CacheHit false), %d venv creations; want 1 and 1", n, built, venvs)
		}
		if v := importVersion(t, results[0].Python, "tinypkg"); v != "1.0" {
			t.Errorf("tinypkg %q", v)
		}
	})
}

func TestEnsureConcurrentProcesses(t *testing.T) {
	t.Parallel()
	forEachBuilder(t, func(t *testing.T, pathEnv, builder string) {
		ctx := ctxFor(t, 2*time.Minute)
		root := t.TempDir()
		def, err := json.Marshal(offline(wheels(t), "tinypkg==1.0"))
		if err != nil {
			t.Fatal(err)
		}
		const n = 2
		cmds := make([]*exec.Cmd, n)
		outs := make([]bytes.Buffer, n)
		errOuts := make([]bytes.Buffer, n)
		for i := range cmds {
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), ensureChildEnv+"="+root, ensureChildDefEnv+"="+string(def), ensureChildPathEnv+"="+pathEnv)
			cmd.Stdout, cmd.Stderr = &outs[i], &errOuts[i]
			cmds[i] = cmd
		}
		for _, cmd := range cmds {
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
		}
		built, venvs := 0, 0
		var key string
		for i, cmd := range cmds {
			if err := cmd.Wait(); err != nil {
				t.Fatalf("child %d: %v\n%s", i, err, errOuts[i].String())
			}
			var cr childResult
			if err := json.Unmarshal(outs[i].Bytes(), &cr); err != nil {
				t.Fatalf("child %d output %q: %v", i, outs[i].String(), err)
			}
			if cr.Error != "" || cr.Result == nil {
				t.Fatalf("child %d: %s", i, cr.Error)
			}
			if key != "" && cr.Result.Key != key {
				t.Errorf("children got keys %s and %s", key, cr.Result.Key)
			}
			key = cr.Result.Key
			if !cr.Result.CacheHit {
				built++
			}
			venvs += countCommands(cr.Log, " venv ")
		}
		if built != 1 || venvs != 1 {
			t.Errorf("%d processes: %d builds, %d venv creations; want 1 and 1", n, built, venvs)
		}
	})
}

func TestEnsureFailedBuildIsNotCached(t *testing.T) {
	t.Parallel()
	forEachBuilder(t, func(t *testing.T, pathEnv, builder string) {
		ctx := ctxFor(t, 2*time.Minute)
		links := wheels(t)
		cache := env.Cache{Root: t.TempDir()}
		missing := offline(links, "tinypkg==1.0", "doesnotexist-pkg==1.0")

		var log bytes.Buffer
		res, err := cache.Ensure(ctx, missing, pathEnv, &log)
		if err == nil {
			t.Fatalf("Ensure of a missing package succeeded: %+v", res)
		}
		be := buildError(t, err)
		msg := err.Error()
		t.Logf("missing package:\n%s", msg)
		if !strings.Contains(msg, "doesnotexist-pkg") || !(strings.Contains(msg, "No matching distribution") || strings.Contains(msg, "not found")) {
			t.Errorf("error does not carry the installer's message:\n%s", msg)
		}
		if !strings.Contains(be.Step, "install") {
			t.Errorf("Step = %q, want the install step", be.Step)
		}
		if !strings.Contains(log.String(), "doesnotexist-pkg") {
			t.Errorf("the build log lacks the installer's output:\n%s", log.String())
		}
		assertNoEnvironments(t, cache.Root)

		// Nothing was cached: once the package exists, the same definition builds.
		wheel(t, links, "doesnotexist-pkg", "1.0")
		res, err = cache.Ensure(ctx, missing, pathEnv, &bytes.Buffer{})
		if err != nil {
			t.Fatalf("Ensure after the package appeared: %v", err)
		}
		if res.CacheHit {
			t.Errorf("a failed build was cached: %+v", res)
		}
		if v := importVersion(t, res.Python, "doesnotexist_pkg"); v != "1.0" {
			t.Errorf("doesnotexist_pkg %q", v)
		}

		// Conflicting pins fail with the resolver's explanation.
		cache2 := env.Cache{Root: t.TempDir()}
		_, err = cache2.Ensure(ctx, offline(links, "otherpkg==1.0", "tinypkg==2.0"), pathEnv, &bytes.Buffer{})
		if err == nil {
			t.Fatal("conflicting pins built")
		}
		buildError(t, err)
		msg = err.Error()
		t.Logf("conflict:\n%s", msg)
		if !strings.Contains(msg, "otherpkg") || !(strings.Contains(msg, "conflict") || strings.Contains(msg, "unsatisfiable")) {
			t.Errorf("error does not explain the conflict:\n%s", msg)
		}
		assertNoEnvironments(t, cache2.Root)
		// A fixable definition in the same cache works.
		if res, err := cache2.Ensure(ctx, offline(links, "otherpkg==1.0"), pathEnv, &bytes.Buffer{}); err != nil || res.CacheHit {
			t.Fatalf("fixed definition: %+v %v", res, err)
		}
	})
}

// An index that accepts connections and never answers must fail the build in
// bounded time (HTTPTimeoutSeconds per request, one retry), with a clear error.
func TestEnsureIndexNotAnswering(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the installers' HTTP timeouts (~40 s)")
	}
	t.Parallel()
	forEachBuilderAtOnce(t, func(t *testing.T, pathEnv, builder string) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var conns []net.Conn
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c) // hold it open, never answer
				mu.Unlock()
			}
		}()
		t.Cleanup(func() {
			ln.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		})
		def := env.Environment{Python: &env.Python{Conda: &env.CondaDependencies{
			PipPackages: []string{"tinypkg"},
			PipOptions:  env.PipOptions{IndexURL: "http://" + ln.Addr().String() + "/simple"},
		}}}
		cache := env.Cache{Root: t.TempDir()}
		ctx := ctxFor(t, 150*time.Second)
		start := time.Now()
		res, err := cache.Ensure(ctx, def, pathEnv, &bytes.Buffer{})
		elapsed := time.Since(start)
		t.Logf("%s: an unanswering index failed the build after %s", builder, elapsed.Round(time.Millisecond))
		if err == nil {
			t.Fatalf("Ensure succeeded against a dead index: %+v", res)
		}
		if elapsed >= 120*time.Second {
			t.Errorf("failing took %s, want < 120s", elapsed)
		}
		if ctx.Err() != nil {
			t.Errorf("the build only stopped at the test's deadline: %v", err)
		}
		buildError(t, err)
		msg := err.Error()
		t.Logf("dead index:\n%s", msg)
		if !strings.Contains(msg, "timed out") {
			t.Errorf("error does not say the index timed out:\n%s", msg)
		}
		assertNoEnvironments(t, cache.Root)
	})
}

func TestEnsureFieldErrors(t *testing.T) {
	t.Parallel()
	pathEnv := pipPath(t)
	ctx := ctxFor(t, time.Minute)
	out, err := exec.Command(realPy, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])").Output()
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(string(out))
	cache := env.Cache{Root: t.TempDir()}

	fieldErr := func(err error) *field.Error {
		t.Helper()
		var fe *field.Error
		if !errors.As(err, &fe) {
			t.Fatalf("err = %v (%T), want *field.Error", err, err)
		}
		return fe
	}

	noPython := env.Environment{Python: &env.Python{Conda: &env.CondaDependencies{PythonVersion: "3.99", PipPackages: []string{"tinypkg"}}}}
	for name, err := range map[string]error{
		"Ensure":       second(cache.Ensure(ctx, noPython, pathEnv, &bytes.Buffer{})),
		"PrepareLocal": second(env.PrepareLocal(ctx, noPython, pathEnv)),
	} {
		fe := fieldErr(err)
		if fe.Attr != "environment.python.conda_dependencies.python_version" || !strings.Contains(fe.Msg, "3.99") ||
			!strings.Contains(fe.Msg, "found:") || !strings.Contains(fe.Msg, version) {
			t.Errorf("%s: python_version 3.99: %v (want the attribute and the versions found, %s)", name, err, version)
		}
	}

	conda := env.Environment{Python: &env.Python{Conda: &env.CondaDependencies{CondaPackages: []string{"numpy=1.26", "scipy"}, PipPackages: []string{"tinypkg"}}}}
	for name, err := range map[string]error{
		"Ensure":       second(cache.Ensure(ctx, conda, pathEnv, &bytes.Buffer{})),
		"PrepareLocal": second(env.PrepareLocal(ctx, conda, pathEnv)),
	} {
		fe := fieldErr(err)
		if fe.Attr != "environment.python.conda_dependencies.conda_packages" {
			t.Errorf("%s: Attr = %q", name, fe.Attr)
		}
		for _, want := range []string{"micromamba", "mamba", "conda", "numpy=1.26", "scipy"} {
			if !strings.Contains(fe.Msg, want) {
				t.Errorf("%s: conda error does not mention %q: %s", name, want, fe.Msg)
			}
		}
	}
	if names := cacheEntries(t, cache.Root); len(names) != 0 {
		t.Errorf("rejected definitions touched the cache: %v", names)
	}
}

func second[T any](_ T, err error) error { return err }

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.Type().IsRegular() {
			info, err := de.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestEviction(t *testing.T) {
	t.Parallel()
	realTools()
	pathEnv := ""
	if uvErr == nil {
		pathEnv = uvPath(t) // fastest; eviction does not depend on the builder
	} else {
		pathEnv = pipPath(t)
	}
	ctx := ctxFor(t, 2*time.Minute)
	links := wheels(t)
	root := t.TempDir()
	build := func(maxBytes int64, pkgs ...string) *env.Result {
		t.Helper()
		res, err := env.Cache{Root: root, MaxBytes: maxBytes}.Ensure(ctx, offline(links, pkgs...), pathEnv, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if res.CacheHit {
			t.Fatalf("%v was already built", pkgs)
		}
		return res
	}

	a := build(0, "tinypkg==1.0")
	releaseA, err := env.HoldInUse(a.Dir)
	if err != nil {
		t.Fatal(err)
	}
	// The cache is over budget after B, but A is in use and B was just built.
	b := build(1, "tinypkg==2.0")
	if !exists(filepath.Join(a.Dir, ".complete")) || !exists(b.Python) {
		t.Fatalf("an environment in use (or the new one) was evicted: A %v, B %v", exists(a.Dir), exists(b.Dir))
	}
	if removed, err := (env.Cache{Root: root, MaxBytes: 1}).Evict(ctx, b.Dir); err != nil || len(removed) != 0 {
		t.Errorf("Evict while A is held removed %v (%v)", removed, err)
	}
	releaseA()

	// While an Ensure of A's key holds its build lock (it found the marker gone and
	// is about to rebuild, say), eviction must not delete files under it.
	lf, err := os.OpenFile(a.Dir+".lock", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("the build lock of A: %v", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	removed, err := (env.Cache{Root: root, MaxBytes: 1}).Evict(ctx, b.Dir)
	lf.Close() // releases the flock
	if err != nil || len(removed) != 0 || !exists(filepath.Join(a.Dir, ".complete")) {
		t.Errorf("Evict removed %v (%v) while A's build lock was held", removed, err)
	}

	// A is now the least recently used and unused; B was used more recently.
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(a.Dir, ".last_used"), old, old); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := os.Chtimes(filepath.Join(b.Dir, ".last_used"), now, now); err != nil {
		t.Fatal(err)
	}
	// Room for two environments, not three.
	size := dirSize(t, b.Dir)
	c := build(2*size+size/2, "otherpkg==1.0")
	if exists(a.Dir) {
		t.Errorf("the least recently used environment A was not evicted")
	}
	if !exists(filepath.Join(b.Dir, ".complete")) || !exists(filepath.Join(c.Dir, ".complete")) {
		t.Errorf("eviction removed more than needed: B %v, C %v", exists(b.Dir), exists(c.Dir))
	}
	if v := importVersion(t, c.Python, "otherpkg"); v != "1.0" {
		t.Errorf("otherpkg %q", v)
	}
	if v := importVersion(t, b.Python, "tinypkg"); v != "2.0" {
		t.Errorf("tinypkg in B %q", v)
	}
	// An evicted environment is rebuilt on demand.
	if again := build(0, "tinypkg==1.0"); again.Dir != a.Dir {
		t.Errorf("rebuilt A at %s, want %s", again.Dir, a.Dir)
	}
}

// A complete environment whose interpreter is gone (the base Python it links
// to was removed) is noticed by a stat, without starting anything, and built
// again; a cache hit leaves the probe file beside the environments.
func TestEnsureRebuildsBrokenEnvironment(t *testing.T) {
	t.Parallel()
	pathEnv := pipPath(t)
	ctx := ctxFor(t, 2*time.Minute)
	links := wheels(t)
	cache := env.Cache{Root: filepath.Join(t.TempDir(), "envs")}
	def := offline(links, "tinypkg==1.0")
	a, err := cache.Ensure(ctx, def, pathEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cache.Root, ".probes.json")); err != nil {
		t.Errorf("no probe file after a build: %v", err)
	}
	py := filepath.Join(a.Dir, "bin", "python")
	if err := os.Remove(py); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(t.TempDir(), "gone", "python3"), py); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	b, err := cache.Ensure(ctx, def, pathEnv, &log)
	if err != nil {
		t.Fatalf("Ensure of a broken environment: %v\n%s", err, log.String())
	}
	if b.CacheHit || b.Key != a.Key || !strings.Contains(log.String(), "is broken") {
		t.Errorf("broken environment: %+v, want a rebuild of %s logged as broken:\n%s", b, a.Key, log.String())
	}
	if v := importVersion(t, b.Python, "tinypkg"); v != "1.0" {
		t.Errorf("rebuilt environment: tinypkg %q", v)
	}
	c, err := cache.Ensure(ctx, def, pathEnv, &bytes.Buffer{})
	if err != nil || !c.CacheHit {
		t.Errorf("after the rebuild: %+v, %v; want a cache hit", c, err)
	}
}
