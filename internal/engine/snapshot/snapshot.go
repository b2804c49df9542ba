// Package snapshot builds the content manifest of a run's source directory and stores and
// materializes its files in a content-addressed blob store.
//
// The manifest hash covers only paths, normalized modes and contents, so it is stable across
// machines and checkouts and can be computed at plan time; a stat cache keeps re-plans cheap.
package snapshot

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Limits bound a snapshot. Zero fields mean the defaults (300 MB, 2000 files, like Azure ML).
type Limits struct {
	MaxBytes int64
	MaxFiles int
}

const (
	DefaultMaxBytes int64 = 300 * 1024 * 1024
	DefaultMaxFiles       = 2000
)

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

type Options struct {
	Limits Limits
	// StatCacheDir, when non-empty, is a directory where a stat cache is kept (one gob file per
	// absolute source directory, named after the sha256 of that directory). An entry keyed by relative
	// path holds size, mtime (ns), ctime (ns), inode, mode and the sha256; if all stat fields match,
	// the file is not re-read. The file is written atomically; a corrupt or unreadable cache is ignored.
	StatCacheDir string
}

// ModeSymlink is the Entry.Mode of a symlink (git's mode for links).
const ModeSymlink uint32 = 0o120000

type Entry struct {
	Path       string // slash-separated, relative to the source dir, never absolute, never containing ".."
	Mode       uint32 // 0644 or 0755 for regular files; ModeSymlink for symlinks
	Size       int64
	SHA256     string // hex sha256 of the content; for a symlink, of LinkTarget
	LinkTarget string // symlinks only: relative, slash form, stays inside the directory
}

type Manifest struct {
	Entries []Entry // sorted by Path
	Hash    string  // "sha256:" + hex sha256 over "%s\t%o\t%s\n" (Path, Mode, SHA256) of all entries in order
	Files   int     // number of entries
	Bytes   int64   // sum of Size over regular files
}

// Lookup returns the entry with the given path.
func (m *Manifest) Lookup(p string) (Entry, bool) {
	i, ok := slices.BinarySearchFunc(m.Entries, p, func(e Entry, p string) int { return strings.Compare(e.Path, p) })
	if !ok {
		return Entry{}, false
	}
	return m.Entries[i], true
}

func newManifest(entries []Entry) *Manifest {
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	m := &Manifest{Entries: entries, Files: len(entries)}
	h := sha256.New()
	for _, e := range entries {
		fmt.Fprintf(h, "%s\t%o\t%s\n", e.Path, e.Mode, e.SHA256)
		if e.Mode != ModeSymlink {
			m.Bytes += e.Size
		}
	}
	m.Hash = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return m
}

// LimitError reports a snapshot over its limits. Largest holds up to 10 of the largest regular files,
// largest first; their SHA256 is left empty because limits are checked before anything is hashed.
type LimitError struct {
	Dir     string
	Files   int
	Bytes   int64
	Limits  Limits
	Largest []Entry

	topDirs []dirCount // when over the file limit: top-level directories holding the most entries
}

type dirCount struct {
	name  string
	count int
}

func (e *LimitError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "snapshot of %s is %s in %d files, over the limit of %s / %d files",
		e.Dir, formatSize(e.Bytes), e.Files, formatSize(e.Limits.MaxBytes), e.Limits.MaxFiles)
	if len(e.Largest) > 0 {
		b.WriteString("; largest files: ")
		for i, f := range e.Largest {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s (%s)", f.Path, formatSize(f.Size))
		}
	}
	if len(e.topDirs) > 0 {
		b.WriteString("; most files are under: ")
		for i, d := range e.topDirs {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s/ (%d files)", d.name, d.count)
		}
	}
	b.WriteString("; add them to .amlignore or raise the provider's snapshot limits")
	return b.String()
}

func formatSize(n int64) string {
	switch {
	case n < 1024:
		return fmt.Sprintf("%d B", n)
	case n < 1024*1024:
		return fmt.Sprintf("%.1f KB", float64(n)/1024)
	case n < 1024*1024*1024:
		return fmt.Sprintf("%.1f MB", float64(n)/(1024*1024))
	default:
		return fmt.Sprintf("%.1f GB", float64(n)/(1024*1024*1024))
	}
}

// SymlinkError reports a symlink that points outside the source directory.
type SymlinkError struct {
	Path, Target string
}

func (e *SymlinkError) Error() string {
	return fmt.Sprintf("symlink %s -> %s leaves the source directory; snapshots refuse links outside it", e.Path, e.Target)
}

// ErrSourceChanged is wrapped by errors about a file whose content no longer matches its manifest.
var ErrSourceChanged = errors.New("source changed since it was hashed")

// hashedFiles counts file contents read by Build, so tests can see stat cache hits.
var hashedFiles atomic.Int64

// workers sizes I/O pools: a little above the core count because small-file hashing waits on I/O.
func workers() int {
	return min(max(runtime.NumCPU(), 2)*2, 16)
}

// file is a walked entry before hashing.
type file struct {
	rel  string
	abs  string
	st   fileStat
	sha  string
	link string // symlink target, slash form
}

func (f *file) isLink() bool { return f.link != "" }

func (f *file) entry() Entry {
	if f.isLink() {
		return Entry{Path: f.rel, Mode: ModeSymlink, Size: int64(len(f.link)), SHA256: f.sha, LinkTarget: f.link}
	}
	return Entry{Path: f.rel, Mode: normalizeMode(fs.FileMode(f.st.Mode)), Size: f.st.Size, SHA256: f.sha}
}

func normalizeMode(m fs.FileMode) uint32 {
	if m.Perm()&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

// ReservedDir is the top-level directory name a snapshot never contains.
const ReservedDir = ".aml"

// Build walks dir and returns its manifest.
//   - .git is always excluded, at any depth, and so is a top-level .aml (ReservedDir).
//   - Each directory's .amlignore, or else its .gitignore, applies to that directory and below with
//     git's syntax and precedence (deeper files win, negation, last match wins). Excluded directories
//     are not descended into. Ignore files are part of the snapshot unless they ignore themselves.
//   - Only paths, normalized modes and contents are hashed; empty directories are not recorded.
//   - Symlinks are recorded, not followed; an absolute one, or one that leaves dir lexically or through
//     other links, is refused with *SymlinkError. Sockets, pipes and devices are refused.
//   - Over the limits, *LimitError is returned before anything is hashed.
func Build(ctx context.Context, dir string, opts Options) (*Manifest, error) {
	return buildWatched(ctx, dir, opts, nil)
}

// buildWatched is Build; watch, when not nil, is called with each directory the walk
// is about to read, before it reads it (Memo watches them).
func buildWatched(ctx context.Context, dir string, opts Options, watch func(absDir string)) (*Manifest, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("snapshot: source directory %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("snapshot: source directory %s does not exist", dir)
	case err != nil:
		return nil, fmt.Errorf("snapshot: source directory %s: %w", dir, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("snapshot: source directory %s is not a directory", dir)
	}

	w := &walker{ctx: ctx, root: abs, watch: watch}
	if err := w.walk("", abs, nil); err != nil {
		return nil, err
	}
	files, err := statFiles(ctx, w.files)
	if err != nil {
		return nil, err
	}
	w.files = files

	limits := opts.Limits.withDefaults()
	if lerr := checkLimits(dir, w.files, limits); lerr != nil {
		return nil, lerr
	}

	var cache *statCache
	if opts.StatCacheDir != "" {
		cache = openStatCache(opts.StatCacheDir, abs)
	}
	if err := hashFiles(ctx, w.files, cache); err != nil {
		cache.discard()
		return nil, err
	}
	cache.save(w.files)

	entries := make([]Entry, len(w.files))
	for i := range w.files {
		entries[i] = w.files[i].entry()
	}
	m := newManifest(entries)
	// Files may have grown while being hashed; the limits must hold for what was hashed.
	if lerr := checkLimits(dir, w.files, limits); lerr != nil {
		return nil, lerr
	}
	return m, nil
}

func checkLimits(dir string, files []file, l Limits) *LimitError {
	var bytes int64
	for i := range files {
		if !files[i].isLink() {
			bytes += files[i].st.Size
		}
	}
	if bytes <= l.MaxBytes && len(files) <= l.MaxFiles {
		return nil
	}
	e := &LimitError{Dir: dir, Files: len(files), Bytes: bytes, Limits: l}
	var regular []Entry
	for i := range files {
		if !files[i].isLink() {
			regular = append(regular, files[i].entry())
		}
	}
	slices.SortFunc(regular, func(a, b Entry) int {
		return cmp.Or(cmp.Compare(b.Size, a.Size), strings.Compare(a.Path, b.Path))
	})
	e.Largest = regular[:min(len(regular), 10)]
	if len(files) > l.MaxFiles {
		counts := map[string]int{}
		for i := range files {
			if top, _, ok := strings.Cut(files[i].rel, "/"); ok {
				counts[top]++
			}
		}
		for name, n := range counts {
			e.topDirs = append(e.topDirs, dirCount{name, n})
		}
		slices.SortFunc(e.topDirs, func(a, b dirCount) int {
			return cmp.Or(cmp.Compare(b.count, a.count), strings.Compare(a.name, b.name))
		})
		e.topDirs = e.topDirs[:min(len(e.topDirs), 5)]
	}
	return e
}

type walker struct {
	ctx   context.Context
	root  string
	files []file
	watch func(absDir string)
}

func (w *walker) walk(relDir, absDir string, rules []rule) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if w.watch != nil {
		w.watch(absDir)
	}
	des, err := os.ReadDir(absDir)
	if err != nil {
		return fmt.Errorf("snapshot: reading directory %s: %w", absDir, err)
	}
	rules, err = loadIgnore(relDir, absDir, des, rules)
	if err != nil {
		return err
	}
	for _, de := range des {
		name := de.Name()
		// .git is never part of a snapshot; a .git file (worktree or submodule pointer) neither.
		if name == ".git" {
			continue
		}
		// A top-level .aml holds workspaces and, in a run directory, the engine's
		// control files: it changes with every run, so it is never snapshotted.
		if name == ReservedDir && relDir == "" {
			continue
		}
		rel := name
		if relDir != "" {
			rel = relDir + "/" + name
		}
		abs := absDir + string(filepath.Separator) + name
		typ := de.Type()
		if ignored(rules, rel, name, typ.IsDir()) {
			continue
		}
		switch {
		case typ.IsDir():
			if err := w.walk(rel, abs, rules); err != nil {
				return err
			}
		case typ&fs.ModeSymlink != 0:
			if err := w.symlink(rel, abs); err != nil {
				return err
			}
		case typ.IsRegular():
			w.files = append(w.files, file{rel: rel, abs: abs}) // stat'ed later, in parallel
		default:
			return specialFileError(rel, typ)
		}
	}
	return nil
}

func specialFileError(rel string, m fs.FileMode) error {
	kind := "special file"
	switch {
	case m&fs.ModeSocket != 0:
		kind = "socket"
	case m&fs.ModeNamedPipe != 0:
		kind = "named pipe"
	case m&fs.ModeCharDevice != 0:
		kind = "character device"
	case m&fs.ModeDevice != 0:
		kind = "device"
	case m.IsDir() || m&fs.ModeSymlink != 0:
		kind = "file that changed type while being read"
	}
	return fmt.Errorf("snapshot: %s is a %s; snapshots hold only regular files and symlinks (add it to .amlignore)", rel, kind)
}

// loadIgnore appends the rules of the directory's .amlignore, or else its .gitignore.
func loadIgnore(relDir, absDir string, des []fs.DirEntry, rules []rule) ([]rule, error) {
	var name string
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		switch de.Name() {
		case ".amlignore":
			name = ".amlignore"
		case ".gitignore":
			if name == "" {
				name = ".gitignore"
			}
		}
	}
	if name == "" {
		return rules, nil
	}
	data, err := os.ReadFile(filepath.Join(absDir, name))
	if err != nil {
		return nil, fmt.Errorf("snapshot: reading %s: %w", path.Join(relDir, name), err)
	}
	more := parseIgnore(data, relDir)
	if len(more) == 0 {
		return rules, nil
	}
	// Clip so sibling directories never share (and overwrite) the appended tail.
	return append(slices.Clip(rules), more...), nil
}

func (w *walker) symlink(rel, abs string) error {
	target, err := os.Readlink(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("snapshot: %s: %w", rel, err)
	}
	slashTarget := filepath.ToSlash(target)
	if isAbsTarget(slashTarget) || !linkStaysInside(rel, slashTarget, w.readlink) {
		return &SymlinkError{Path: rel, Target: target}
	}
	sum := sha256.Sum256([]byte(slashTarget))
	w.files = append(w.files, file{rel: rel, abs: abs, sha: hex.EncodeToString(sum[:]), link: slashTarget})
	return nil
}

// readlink reports the target of rel if it is a symlink on disk.
func (w *walker) readlink(rel string) (string, bool) {
	p := filepath.Join(w.root, filepath.FromSlash(rel))
	fi, err := os.Lstat(p)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return "", false
	}
	t, err := os.Readlink(p)
	if err != nil {
		return "", false
	}
	return filepath.ToSlash(t), true
}

func isAbsTarget(t string) bool {
	return t == "" || path.IsAbs(t) || filepath.IsAbs(filepath.FromSlash(t)) || filepath.VolumeName(filepath.FromSlash(t)) != ""
}

// linkStaysInside reports whether the symlink at rel with the given relative target resolves inside
// the root, both lexically and when following every symlink met on the way (readlink reports those).
// Non-existent components are taken as plain directories, so dangling links are judged lexically.
func linkStaysInside(rel, target string, readlink func(rel string) (string, bool)) bool {
	lex := path.Join(path.Dir(rel), target)
	if lex == ".." || strings.HasPrefix(lex, "../") {
		return false
	}
	var stack []string
	if d := path.Dir(rel); d != "." {
		stack = strings.Split(d, "/")
	}
	pending := strings.Split(target, "/")
	hops := 0
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
		case "..":
			if len(stack) == 0 {
				return false
			}
			stack = stack[:len(stack)-1]
		default:
			t, ok := readlink(strings.Join(append(stack, c), "/"))
			if !ok {
				stack = append(stack, c)
				continue
			}
			// Like the kernel's ELOOP limit; a loop cannot be materialized sensibly either.
			if hops++; hops > 40 || isAbsTarget(t) {
				return false
			}
			pending = append(strings.Split(t, "/"), pending...)
		}
	}
	return true
}

// statFiles lstats the regular files on a worker pool (on a warm cache this is most of the work)
// and drops files deleted since the walk.
func statFiles(ctx context.Context, files []file) ([]file, error) {
	gone := make([]bool, len(files))
	err := forEach(ctx, len(files), workers(), func(i int) error {
		f := &files[i]
		if f.isLink() {
			return nil
		}
		fi, err := os.Lstat(f.abs)
		if errors.Is(err, fs.ErrNotExist) {
			gone[i] = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("snapshot: %s: %w", f.rel, err)
		}
		if !fi.Mode().IsRegular() {
			return specialFileError(f.rel, fi.Mode())
		}
		f.st = statOf(fi)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := files[:0]
	for i := range files {
		if !gone[i] {
			out = append(out, files[i])
		}
	}
	return out, nil
}

// hashFiles fills in the sha of every regular file, from the cache when its stat still matches.
func hashFiles(ctx context.Context, files []file, cache *statCache) error {
	var todo []int
	for i := range files {
		f := &files[i]
		if f.isLink() {
			continue
		}
		if sha, ok := cache.lookup(f.rel, f.st); ok {
			f.sha = sha
			continue
		}
		todo = append(todo, i)
	}
	return forEach(ctx, len(todo), workers(), func(k int) error {
		f := &files[todo[k]]
		sha, st, err := hashFile(f.abs, f.st)
		if err != nil {
			return fmt.Errorf("snapshot: %s: %w", f.rel, err)
		}
		f.sha, f.st = sha, st
		return nil
	})
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64*1024); return &b }}

// copyPooled copies with a pooled buffer. The reader is wrapped because *os.File's WriteTo would
// otherwise bypass the buffer and allocate its own for every file.
func copyPooled(dst io.Writer, src io.Reader) (int64, error) {
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	return io.CopyBuffer(dst, struct{ io.Reader }{src}, *buf)
}

// hashFile hashes a file and returns the stat that goes with the content, retrying if the file
// changes while it is read so the manifest never pairs one version's size with another's hash.
func hashFile(abs string, st fileStat) (string, fileStat, error) {
	for attempt := 0; ; attempt++ {
		hashedFiles.Add(1)
		f, err := os.Open(abs)
		if err != nil {
			return "", st, err
		}
		h := sha256.New()
		n, err := copyPooled(h, f)
		if err != nil {
			f.Close()
			return "", st, err
		}
		fi, err := f.Stat()
		f.Close()
		if err != nil {
			return "", st, err
		}
		after := statOf(fi)
		if after == st && n == st.Size {
			return hex.EncodeToString(h.Sum(nil)), st, nil
		}
		if attempt == 2 {
			return "", st, errors.New("file keeps changing while it is being read")
		}
		st = after
	}
}

// forEach runs fn(0..n-1) on a pool of workers and returns the first error (or ctx's).
func forEach(ctx context.Context, n, workers int, fn func(i int) error) error {
	if n == 0 {
		return ctx.Err()
	}
	inner, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		once     sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for range min(workers, n) {
		wg.Go(func() {
			for inner.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
