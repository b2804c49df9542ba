package env

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Files inside a cached environment directory.
const (
	completeMarker = ".complete"    // written last: the build's commit point
	packagesFile   = "packages.txt" // `pip freeze` of the built environment
	lastUsedFile   = ".last_used"   // touched on every use (LRU)
	inUseLock      = ".in_use.lock" // runs hold a shared flock on it
	buildLogFile   = "build.log"    // copy of the build's output
)

// Platform is the part of an environment's identity that comes from the host.
type Platform struct {
	OS     string `json:"os"`
	Arch   string `json:"arch"`
	Python string `json:"python"` // full version of the base interpreter
	ABI    string `json:"abi"`    // e.g. cpython-311-x86_64-linux-gnu
}

// Key is the cache key of an environment on a platform: the definition hash plus
// the platform, so one definition built for two Python ABIs is two environments.
func Key(e Environment, p Platform) string {
	b, _ := json.Marshal(struct {
		Def      string   `json:"def"`
		Platform Platform `json:"platform"`
	}{e.Hash(), p})
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func dirName(key string) string { return strings.TrimPrefix(key, "sha256:")[:32] }

// Cache is a directory of built environments, <Root>/<key prefix>/.
type Cache struct {
	Root string
	// MaxBytes bounds the cache; least recently used environments that no run is
	// using are evicted after a build pushes it over. 0 means unbounded.
	MaxBytes int64
}

// Result describes the environment a run will use.
type Result struct {
	Python       string  `json:"python"` // interpreter inside the environment
	Dir          string  `json:"dir"`
	Key          string  `json:"key"`
	CacheHit     bool    `json:"cache_hit"`
	BuildSeconds float64 `json:"build_seconds"`
	Builder      string  `json:"builder"`
}

// BuildError is a failed build; Output holds the tail of the tool's output.
type BuildError struct {
	Step   string
	Output string
	Err    error
}

func (e *BuildError) Error() string {
	msg := fmt.Sprintf("building the Python environment failed at %s: %v", e.Step, e.Err)
	if e.Output != "" {
		msg += "\n" + e.Output
	}
	return msg
}

func (e *BuildError) Unwrap() error { return e.Err }

// Ensure returns a ready environment for e, building it at most once per key
// across goroutines and processes (an exclusive flock per key). The build happens
// in place under the lock and is committed by the .complete marker written last;
// a failed build is removed, never cached. (A virtualenv cannot be renamed after it
// is built: its scripts carry absolute paths.) log receives the build's output.
// BuilderFor names the builder Ensure uses for e on pathEnv when the
// environment is not in the cache: conda, mamba or micromamba for conda
// packages, else uv when the host has it, else venv+pip.
func BuilderFor(e Environment, pathEnv string) string {
	return Cache{}.BuilderFor(e, pathEnv)
}

// BuilderFor is the package's BuilderFor with the `uv --version` check kept in
// the cache's probe file, so naming the builder of a cache hit starts nothing.
func (c Cache) BuilderFor(e Environment, pathEnv string) string {
	conda := CondaDependencies{}
	if py := e.Py(); py.Conda != nil {
		conda = *py.Conda
	}
	pr := c.prober()
	name := builderName(conda, discoverTools(pathEnv, pr))
	if _, err := os.Stat(c.Root); err == nil {
		pr.save() // never the first thing in a new cache root
	}
	return name
}

func (c Cache) prober() *prober {
	if c.Root == "" {
		return nil
	}
	return newProber(c.Root)
}

func builderName(conda CondaDependencies, tools Tools) string {
	switch {
	case len(conda.CondaPackages) > 0 && tools.Conda == "":
		return "conda"
	case len(conda.CondaPackages) > 0:
		return filepath.Base(tools.Conda)
	case tools.UV != "":
		return "uv"
	}
	return "venv+pip"
}

func (c Cache) Ensure(ctx context.Context, e Environment, pathEnv string, log io.Writer) (*Result, error) {
	py := e.Py()
	conda := CondaDependencies{}
	if py.Conda != nil {
		conda = *py.Conda
	}
	// A cache hit runs nothing: the base interpreter's probe comes from the
	// probe file unless the interpreter changed (probes.go), and the builders
	// are only looked for (and `uv --version` run) when there is a build.
	var plat Platform
	var base Interpreter
	pr := c.prober()
	if len(conda.CondaPackages) > 0 {
		condaTool := findConda(pathEnv)
		if condaTool == "" {
			return nil, condaMissing(conda.CondaPackages, pathEnv)
		}
		plat = Platform{OS: runtime.GOOS, Arch: runtime.GOARCH, Python: conda.PythonVersion, ABI: "conda:" + filepath.Base(condaTool)}
	} else {
		var err error
		base, err = findInterpreter(ctx, conda.PythonVersion, pathEnv, pr)
		if err != nil {
			return nil, err
		}
		plat = Platform{OS: runtime.GOOS, Arch: runtime.GOARCH, Python: base.Version, ABI: base.ABI}
	}
	key := Key(e, plat)
	dir := filepath.Join(c.Root, dirName(key))
	res := &Result{Dir: dir, Key: key, Python: filepath.Join(dir, "bin", "python")}
	if ready(dir) && usable(dir) {
		pr.save()
		res.CacheHit = true
		touch(filepath.Join(dir, lastUsedFile))
		return res, nil
	}
	if err := os.MkdirAll(c.Root, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockFile(ctx, filepath.Join(c.Root, dirName(key)+".lock"), syscall.LOCK_EX)
	if err != nil {
		return nil, fmt.Errorf("waiting for the environment build lock: %w", err)
	}
	defer unlock()
	if ready(dir) && usable(dir) { // built by someone else while we waited
		pr.save()
		res.CacheHit = true
		touch(filepath.Join(dir, lastUsedFile))
		return res, nil
	}
	var out bytes.Buffer
	w := io.MultiWriter(&out, log)
	if ready(dir) {
		// Complete once, but its interpreter is gone (the base Python it links
		// to was removed, or the directory was damaged): build it again.
		_, err := os.Stat(res.Python)
		fmt.Fprintf(w, "aml: environment %s is broken (%v); building it again\n", key, err)
	}
	// A directory without the marker is a crashed build: start over.
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	tools := DiscoverTools(pathEnv)
	start := time.Now()
	b := builder{tools: tools, dir: dir, log: w, env: buildEnv(pathEnv)}
	res.Builder = builderName(conda, tools)
	switch res.Builder {
	case "uv":
		err = b.uv(ctx, base, conda)
	case "venv+pip":
		err = b.venvPip(ctx, base, conda)
	default:
		err = b.conda(ctx, conda)
	}
	if err == nil {
		err = b.freeze(ctx, res.Builder == "uv")
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	res.BuildSeconds = time.Since(start).Seconds()
	_ = os.WriteFile(filepath.Join(dir, buildLogFile), out.Bytes(), 0o644)
	marker, _ := json.MarshalIndent(map[string]any{
		"key": key, "definition": e, "platform": plat, "builder": res.Builder,
		"build_seconds": res.BuildSeconds, "built_at": time.Now().UTC(),
	}, "", "  ")
	if err := writeFileSync(filepath.Join(dir, completeMarker), marker); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	touch(filepath.Join(dir, lastUsedFile))
	pr.save() // only now: a failed build leaves nothing in the cache
	if c.MaxBytes > 0 {
		_, _ = c.Evict(ctx, dir)
	}
	return res, nil
}

func ready(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, completeMarker))
	return err == nil
}

// usable is the cheap check of a complete environment: its interpreter is
// there and, through any symlink to the base Python, a regular executable file.
// (Starting it would cost as much as the run's own start-up.)
func usable(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, "bin", "python"))
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

func touch(path string) {
	now := time.Now()
	if err := os.Chtimes(path, now, now); errors.Is(err, fs.ErrNotExist) {
		_ = os.WriteFile(path, nil, 0o644)
	}
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// lockFile takes a flock, polling so that ctx can interrupt the wait.
func lockFile(ctx context.Context, path string, how int) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	delay := 10 * time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		if delay < 250*time.Millisecond {
			delay *= 2
		}
	}
}

// HoldInUse takes a shared lock that keeps the environment from being evicted
// while a run uses it; the lock lasts until release is called or the process ends.
func HoldInUse(dir string) (release func(), err error) {
	return lockFile(context.Background(), filepath.Join(dir, inUseLock), syscall.LOCK_SH)
}

// Evict removes least-recently-used complete environments until the cache fits,
// skipping keep and any environment a run holds. It returns what it removed.
func (c Cache) Evict(ctx context.Context, keep string) ([]string, error) {
	entries, err := os.ReadDir(c.Root)
	if err != nil {
		return nil, err
	}
	type envDir struct {
		dir  string
		size int64
		used time.Time
	}
	var envs []envDir
	var total int64
	for _, de := range entries {
		if !de.IsDir() {
			continue
		}
		dir := filepath.Join(c.Root, de.Name())
		if !ready(dir) {
			continue
		}
		size := dirSize(dir)
		total += size
		used := time.Time{}
		if st, err := os.Stat(filepath.Join(dir, lastUsedFile)); err == nil {
			used = st.ModTime()
		}
		envs = append(envs, envDir{dir, size, used})
	}
	sort.Slice(envs, func(i, j int) bool { return envs[i].used.Before(envs[j].used) })
	var removed []string
	for _, ev := range envs {
		if total <= c.MaxBytes {
			break
		}
		if ev.dir == keep {
			continue
		}
		// Hold the key's build lock too, so an Ensure that finds the marker gone
		// waits for the removal instead of rebuilding while RemoveAll runs.
		unbuild, err := tryLock(ev.dir + ".lock")
		if err != nil {
			continue // an Ensure of this key holds it
		}
		unlock, err := tryLock(filepath.Join(ev.dir, inUseLock))
		if err != nil {
			unbuild()
			continue // in use by a run
		}
		// Remove the marker first: a concurrent reader then sees "not built".
		_ = os.Remove(filepath.Join(ev.dir, completeMarker))
		err = os.RemoveAll(ev.dir)
		unlock()
		unbuild()
		if err == nil {
			total -= ev.size
			removed = append(removed, ev.dir)
		}
	}
	return removed, nil
}

func tryLock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, de fs.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			if info, err := de.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
