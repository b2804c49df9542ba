package env

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// A probe (starting an interpreter to ask its version and ABI, or running
// `uv --version`) costs a process start-up, and through a version manager's shim
// (pyenv's are bash scripts that start pyenv) several. Its answer only changes
// when the file behind the path changes, so it is kept, keyed by the path and a
// fingerprint of what the path resolves to: device, inode, size, mtime and ctime
// of the file (symlinks followed), and, for the real interpreter the probe
// reported (sys.executable), the same again. A shim (a file starting with "#!")
// picks its interpreter from its surroundings, so its fingerprint also covers
// the version manager's inputs: PYENV_* and ASDF_* variables, the working
// directory, and the .python-version / .tool-versions files from there up and
// pyenv's global version file. Anything different means a new probe.
//
// Answers live in memory for the process and, for a Cache, in a small JSON file
// in its root, so each run's supervisor (a new process) starts no interpreter
// when nothing changed.

const probesFile = ".probes.json"

type fileID struct {
	Dev, Ino               uint64
	Size, MtimeNs, CtimeNs int64
}

func statID(path string) (fileID, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{Dev: uint64(st.Dev), Ino: uint64(st.Ino), Size: st.Size,
		MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano()}, true
}

// fingerprint identifies what running path would run; ok is false when path
// cannot be stat'ed (then nothing is cached for it).
func fingerprint(path string) (string, bool) {
	id, ok := statID(path)
	if !ok {
		return "", false
	}
	parts := []string{path, fmt.Sprint(id)}
	if isScript(path) {
		parts = append(parts, shimInputs()...)
	}
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:16]), true
}

func isScript(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, 2)
	n, _ := f.Read(b)
	return n == 2 && string(b) == "#!"
}

// shimInputs is what pyenv and asdf choose an interpreter by.
func shimInputs() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PYENV") || strings.HasPrefix(kv, "ASDF") {
			out = append(out, kv)
		}
	}
	slices.Sort(out)
	wd, _ := os.Getwd()
	out = append(out, "wd="+wd)
	dirs := []string{wd}
	if d := os.Getenv("PYENV_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		for d != "" {
			for _, name := range []string{".python-version", ".tool-versions"} {
				if id, ok := statID(filepath.Join(d, name)); ok {
					out = append(out, filepath.Join(d, name)+"="+fmt.Sprint(id))
				}
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	root := os.Getenv("PYENV_ROOT")
	if root == "" {
		if home, err := os.UserHomeDir(); err == nil {
			root = filepath.Join(home, ".pyenv")
		}
	}
	if root != "" {
		if id, ok := statID(filepath.Join(root, "version")); ok {
			out = append(out, "pyenv-global="+fmt.Sprint(id))
		}
	}
	return out
}

// probeEntry is one kept answer.
type probeEntry struct {
	FP string `json:"fp"`
	// Exe is the interpreter's own binary (sys.executable, symlinks resolved),
	// checked as well, so an interpreter replaced behind a shim is re-probed.
	Exe     string `json:"exe,omitempty"`
	ExeID   fileID `json:"exe_id"`
	Version string `json:"version,omitempty"`
	ABI     string `json:"abi,omitempty"`
	OK      bool   `json:"ok"` // for `works` checks
}

func (e probeEntry) valid(fp string) bool {
	if e.FP != fp {
		return false
	}
	if e.Exe == "" {
		return true
	}
	id, ok := statID(e.Exe)
	return ok && id == e.ExeID
}

var (
	memMu     sync.Mutex
	memProbes = map[string]probeEntry{}
)

// prober answers probes from memory, then from file (when set), then by
// running the program. save writes new answers back to file.
type prober struct {
	mu      sync.Mutex // interpreters are probed in parallel (discoverInterpreters)
	file    string
	disk    map[string]probeEntry
	loaded  bool
	changed bool
}

func newProber(dir string) *prober {
	p := &prober{}
	if dir != "" {
		p.file = filepath.Join(dir, probesFile)
	}
	return p
}

func (p *prober) lookup(key, fp string) (probeEntry, bool) {
	memMu.Lock()
	e, ok := memProbes[key]
	memMu.Unlock()
	if ok && e.valid(fp) {
		return e, true
	}
	if p == nil || p.file == "" {
		return probeEntry{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.loaded {
		p.loaded = true
		if b, err := os.ReadFile(p.file); err == nil {
			_ = json.Unmarshal(b, &p.disk)
		}
	}
	e, ok = p.disk[key]
	if ok && e.valid(fp) {
		memMu.Lock()
		memProbes[key] = e
		memMu.Unlock()
		return e, true
	}
	return probeEntry{}, false
}

func (p *prober) store(key string, e probeEntry) {
	memMu.Lock()
	memProbes[key] = e
	memMu.Unlock()
	if p == nil || p.file == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.disk == nil {
		p.disk = map[string]probeEntry{}
	}
	p.disk[key] = e
	p.changed = true
}

// save writes the file (a temp file renamed into place, so a reader never sees
// half of it). A lost race with another process only costs a probe later.
func (p *prober) save() {
	if p == nil || p.file == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.changed {
		return
	}
	b, err := json.Marshal(p.disk)
	if err != nil {
		return
	}
	if err := os.MkdirAll(filepath.Dir(p.file), 0o755); err != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(p.file), probesFile+".*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(b)
	if cerr := tmp.Close(); werr != nil || cerr != nil || os.Rename(tmp.Name(), p.file) != nil {
		_ = os.Remove(tmp.Name())
		return
	}
	p.changed = false
}

// python probes the interpreter at path, or answers from what was kept.
func (p *prober) python(ctx context.Context, path string) (Interpreter, error) {
	fp, ok := fingerprint(path)
	key := "python:" + path
	if ok {
		if e, hit := p.lookup(key, fp); hit {
			return Interpreter{Path: path, Version: e.Version, ABI: e.ABI}, nil
		}
	}
	in, exe, err := probePython(ctx, path)
	if err != nil || !ok {
		return in, err
	}
	e := probeEntry{FP: fp, Version: in.Version, ABI: in.ABI}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		if id, ok := statID(real); ok {
			e.Exe, e.ExeID = real, id
		}
	}
	p.store(key, e)
	return in, nil
}

// works reports whether path runs with args (exit 0), or what was kept.
func (p *prober) works(path string, args ...string) bool {
	fp, ok := fingerprint(path)
	key := "works:" + strings.Join(append([]string{path}, args...), " ")
	if ok {
		if e, hit := p.lookup(key, fp); hit {
			return e.OK
		}
	}
	res := works(path, args...)
	if ok && res { // a failure is not kept: the tool may be installed next
		p.store(key, probeEntry{FP: fp, OK: res})
	}
	return res
}
