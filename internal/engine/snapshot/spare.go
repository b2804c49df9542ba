package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Spare trees take materializing a snapshot off the critical path of a run's
// start. A run directory needs a fresh copy of every file (a script may write
// into its own snapshot files, so nothing may be shared with the blob store or
// with another run), and on most file systems creating thousands of small files
// is what costs. So once a run has been launched, a background helper builds a
// copy of its snapshot from the blobs into <spares>/<id>.tmp/tree, records what
// it built (meta.json: the manifest, and inode, size, ctime and mode of every
// file and the names in every directory), and renames <id>.tmp to <id>.ready.
// The next run's start claims a ready tree by renaming its tree/ to the new run
// directory (atomic: two starts never get the same tree), checks that it is
// exactly as built, and patches it into the new manifest: it removes what
// changed or went away and copies in, from the blobs and verified like every
// materialized file, only what changed or is new.
//
// A spare tree is never any run's directory before it is claimed, so a script
// writing into its snapshot files writes into its own copy only. The check at
// claim time catches anything else that touched a spare tree (any write,
// chmod, rename, link or added file changes a file's ctime or inode, or a
// directory's names; ctime cannot be set by an unprivileged process): such a
// tree is thrown away and the run materialized from the blobs as before. Only
// file systems that report ctime and inode numbers (Linux, the BSDs, macOS)
// get spare trees. A builder publishes its tree only once the file system's
// clock has moved past every ctime it recorded, so a change made afterwards
// shows even where timestamps are coarse. Like the blob store's hash check,
// this guards against accidents: a process of the same user that means harm
// could as well rewrite meta.json, the blobs or the agent itself.

// spareReady is the suffix of a ready spare tree's directory under the spares root.
const spareReady = ".ready"

type spareStat struct {
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"`
	CtimeNs int64  `json:"ctime_ns"`
	Mode    uint32 `json:"mode"`
}

// spareMeta is what a builder recorded about its tree.
type spareMeta struct {
	Hash    string               `json:"hash"`
	Entries []Entry              `json:"entries"`
	Files   map[string]spareStat `json:"files"` // by entry path
	Dirs    map[string][]string  `json:"dirs"`  // by directory path ("." is the top): sorted names
}

// BuildSpare materializes m into a new ready spare tree under spares, unless a
// ready one with the same manifest is there already, then removes the older
// ready trees (one is kept per spares root) and builders' leftovers more than
// an hour old.
func (b BlobStore) BuildSpare(ctx context.Context, m *Manifest, spares string) error {
	if _, err := checkManifest(m); err != nil {
		return err
	}
	if err := os.MkdirAll(spares, 0o700); err != nil {
		return err
	}
	names, err := readyNames(spares)
	if err != nil {
		return err
	}
	for _, n := range names {
		if strings.HasSuffix(strings.TrimSuffix(n, spareReady), "-"+spareTag(m)) {
			return nil
		}
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	id := fmt.Sprintf("%020d-%s-%s", time.Now().UnixNano(), hex.EncodeToString(rnd[:]), spareTag(m))
	tmp := filepath.Join(spares, id+".tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(tmp)
		}
	}()
	tree := filepath.Join(tmp, "tree")
	if err := b.Materialize(ctx, m, tree); err != nil {
		return err
	}
	meta, err := describeTree(tree, m)
	if err != nil {
		return err
	}
	if err := waitClockPast(tmp, meta); err != nil {
		return err
	}
	raw, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "meta.json"), raw, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(spares, id+spareReady)); err != nil {
		return err
	}
	ok = true
	pruneSpares(spares, id+spareReady)
	return nil
}

// waitClockPast returns once a file created in dir gets a ctime later than
// every ctime meta records (a second at most).
func waitClockPast(dir string, meta *spareMeta) error {
	var newest int64
	for _, st := range meta.Files {
		newest = max(newest, st.CtimeNs)
	}
	marker := filepath.Join(dir, "clock")
	defer os.Remove(marker)
	for i := 0; i < 1000; i++ {
		_ = os.Remove(marker)
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return err
		}
		fi, err := os.Lstat(marker)
		if err != nil {
			return err
		}
		if statOf(fi).CtimeNs > newest {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return errors.New("snapshot: the file system's clock does not move; no spare tree")
}

// spareTag names a manifest in a spare tree's id.
func spareTag(m *Manifest) string {
	h := strings.TrimPrefix(m.Hash, "sha256:")
	if len(h) > 16 {
		h = h[:16]
	}
	return h
}

// readyNames lists the ready spare trees, newest first.
func readyNames(spares string) ([]string, error) {
	des, err := os.ReadDir(spares)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, de := range des {
		if strings.HasSuffix(de.Name(), spareReady) {
			names = append(names, de.Name())
		}
	}
	slices.Sort(names)
	slices.Reverse(names)
	return names, nil
}

// pruneSpares removes every ready tree but keep, and builders' leftovers older
// than an hour (a builder that was killed).
func pruneSpares(spares, keep string) {
	des, err := os.ReadDir(spares)
	if err != nil {
		return
	}
	for _, de := range des {
		n := de.Name()
		switch {
		case n == keep:
		case strings.HasSuffix(n, spareReady) && n < keep:
			_ = os.RemoveAll(filepath.Join(spares, n))
		case strings.HasSuffix(n, ".tmp"):
			if fi, err := de.Info(); err == nil && time.Since(fi.ModTime()) > time.Hour {
				_ = os.RemoveAll(filepath.Join(spares, n))
			}
		}
	}
}

// describeTree records the files and directories of a tree just materialized from m.
func describeTree(tree string, m *Manifest) (*spareMeta, error) {
	meta := &spareMeta{Hash: m.Hash, Entries: m.Entries, Files: make(map[string]spareStat, len(m.Entries)), Dirs: map[string][]string{}}
	err := filepath.WalkDir(tree, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(tree, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if de.IsDir() {
			names, err := dirNames(p)
			if err != nil {
				return err
			}
			meta.Dirs[rel] = names
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		st := statOf(fi)
		if st.CtimeNs == 0 || st.Ino == 0 {
			return errNoSpareStat
		}
		meta.Files[rel] = spareStat{Ino: st.Ino, Size: st.Size, CtimeNs: st.CtimeNs, Mode: st.Mode}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return meta, nil
}

var errNoSpareStat = errors.New("snapshot: this file system reports no ctime or inode; no spare trees here")

func dirNames(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

// MaterializeFromSpare is Materialize (dest must not exist) using a ready
// spare tree under spares when there is one that is exactly as its builder
// left it: it moves that tree to dest and patches it into m. reused says
// whether it did; without a usable spare tree it materializes m from the blobs.
func (b BlobStore) MaterializeFromSpare(ctx context.Context, m *Manifest, dest, spares string) (reused bool, err error) {
	entries, err := checkManifest(m)
	if err != nil {
		return false, err
	}
	if _, err := os.Lstat(dest); !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("snapshot: materialize: %s already exists", dest)
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return false, fmt.Errorf("snapshot: materialize: %w", err)
	}
	names, _ := readyNames(spares)
	for _, n := range names {
		dir := filepath.Join(spares, n)
		if err := os.Rename(filepath.Join(dir, "tree"), dest); err != nil {
			continue // claimed by another start, or not a tree
		}
		meta, merr := readSpareMeta(filepath.Join(dir, "meta.json"))
		_ = os.RemoveAll(dir)
		if merr == nil && meta.matches(dest) {
			if err := b.patch(ctx, meta, entries, dest); err != nil {
				return true, err
			}
			return true, nil
		}
		// Touched since it was built, or half-described: not used.
		if err := os.RemoveAll(dest); err != nil {
			return false, fmt.Errorf("snapshot: removing a spare tree that changed: %w", err)
		}
		break
	}
	return false, b.Materialize(ctx, m, dest)
}

func readSpareMeta(p string) (*spareMeta, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var meta spareMeta
	if err := json.Unmarshal(raw, &meta); err != nil {
		return nil, err
	}
	if _, err := checkManifest(&Manifest{Entries: meta.Entries}); err != nil {
		return nil, err
	}
	return &meta, nil
}

// matches says whether tree holds exactly what its builder recorded: the same
// names in every directory, and every file the same inode, size, ctime and
// mode.
func (meta *spareMeta) matches(tree string) bool {
	seenFiles := 0
	for rel, want := range meta.Dirs {
		dir := filepath.Join(tree, filepath.FromSlash(rel))
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
			return false // a link in its place would have patch write elsewhere
		}
		got, err := dirNames(dir)
		if err != nil || !slices.Equal(got, want) {
			return false
		}
		for _, n := range got {
			p := n
			if rel != "." {
				p = rel + "/" + n
			}
			if _, isDir := meta.Dirs[p]; isDir {
				continue
			}
			ws, ok := meta.Files[p]
			if !ok {
				return false
			}
			fi, err := os.Lstat(filepath.Join(tree, filepath.FromSlash(p)))
			if err != nil || fi.IsDir() {
				return false
			}
			st := statOf(fi)
			if st.CtimeNs == 0 || st.Ino != ws.Ino || st.Size != ws.Size || st.CtimeNs != ws.CtimeNs || st.Mode != ws.Mode {
				return false
			}
			seenFiles++
		}
	}
	return seenFiles == len(meta.Files) && len(meta.Files) == len(meta.Entries)
}

// patch turns a claimed spare tree (verified to hold meta's entries) into
// entries: what differs is removed, then copied in from the blobs.
func (b BlobStore) patch(ctx context.Context, meta *spareMeta, entries []Entry, dest string) error {
	same := func(a, b Entry) bool {
		return a.Mode == b.Mode && a.SHA256 == b.SHA256 && a.LinkTarget == b.LinkTarget
	}
	newByPath := make(map[string]Entry, len(entries))
	newDirs := map[string]bool{".": true}
	for _, e := range entries {
		newByPath[e.Path] = e
		for d := e.Path; ; {
			i := strings.LastIndexByte(d, '/')
			if i < 0 {
				break
			}
			d = d[:i]
			newDirs[d] = true
		}
	}
	oldByPath := make(map[string]Entry, len(meta.Entries))
	for _, e := range meta.Entries {
		oldByPath[e.Path] = e
		if n, ok := newByPath[e.Path]; ok && same(e, n) {
			continue
		}
		if err := os.Remove(filepath.Join(dest, filepath.FromSlash(e.Path))); err != nil {
			return fmt.Errorf("snapshot: materialize: %w", err)
		}
	}
	// Directories no entry needs any more, deepest first (they are empty now).
	oldDirs := slices.Collect(maps.Keys(meta.Dirs))
	slices.SortFunc(oldDirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, d := range oldDirs {
		if !newDirs[d] {
			if err := os.Remove(filepath.Join(dest, filepath.FromSlash(d))); err != nil {
				return fmt.Errorf("snapshot: materialize: %w", err)
			}
		}
	}
	var regular, links []Entry
	for _, e := range entries {
		if o, ok := oldByPath[e.Path]; ok && same(o, e) {
			continue
		}
		if d := filepath.Dir(filepath.FromSlash(e.Path)); d != "." {
			if err := os.MkdirAll(filepath.Join(dest, d), 0o755); err != nil {
				return fmt.Errorf("snapshot: materialize: %w", err)
			}
		}
		if e.Mode == ModeSymlink {
			links = append(links, e)
		} else {
			regular = append(regular, e)
		}
	}
	err := forEach(ctx, len(regular), workers(), func(i int) error {
		return b.copyOut(regular[i], filepath.Join(dest, filepath.FromSlash(regular[i].Path)))
	})
	if err != nil {
		return err
	}
	for _, e := range links {
		if err := os.Symlink(filepath.FromSlash(e.LinkTarget), filepath.Join(dest, filepath.FromSlash(e.Path))); err != nil {
			return fmt.Errorf("snapshot: materialize %s: %w", e.Path, err)
		}
	}
	return ctx.Err()
}
