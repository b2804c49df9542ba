package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// Tree writes a manifest's files into a new directory as their content
// arrives (Put), so a host that receives a snapshot's blobs need not read them
// back from its store to materialize a run directory; Finish writes the rest
// from the store. The result is what Materialize writes: every file its own
// inode with its normalized mode (never a link to a blob), symlinks last.
type Tree struct {
	b     BlobStore
	dest  string
	mu    sync.Mutex
	todo  map[string][]Entry // regular entries not written yet, by sha256
	links []Entry
}

// NewTree validates m and creates dest (which must not exist) with every
// directory of m.
func (b BlobStore) NewTree(m *Manifest, dest string) (*Tree, error) {
	entries, err := checkManifest(m)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return nil, fmt.Errorf("snapshot: materialize: %w", err)
	}
	if err := os.Mkdir(dest, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot: materialize: %w", err)
	}
	t := &Tree{b: b, dest: dest, todo: map[string][]Entry{}}
	dirs := map[string]bool{}
	for _, e := range entries {
		if d := filepath.Dir(filepath.FromSlash(e.Path)); d != "." {
			dirs[d] = true
		}
		if e.Mode == ModeSymlink {
			t.links = append(t.links, e)
		} else {
			t.todo[e.SHA256] = append(t.todo[e.SHA256], e)
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if err := os.MkdirAll(filepath.Join(dest, d), 0o755); err != nil {
			return nil, fmt.Errorf("snapshot: materialize: %w", err)
		}
	}
	return t, nil
}

// Put writes every file of the tree whose content is data, which must hash to
// sha (else nothing is written and the files are left to Finish). Content the
// tree does not need is ignored. Safe for concurrent use.
func (t *Tree) Put(sha string, data []byte) error {
	t.mu.Lock()
	es := t.todo[sha]
	delete(t.todo, sha)
	t.mu.Unlock()
	if len(es) == 0 {
		return nil
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != sha {
		t.mu.Lock()
		t.todo[sha] = es
		t.mu.Unlock()
		return fmt.Errorf("snapshot: materialize %s: content does not match its sha256", es[0].Path)
	}
	for _, e := range es {
		if err := writeNew(filepath.Join(t.dest, filepath.FromSlash(e.Path)), data, fs.FileMode(e.Mode)); err != nil {
			return fmt.Errorf("snapshot: materialize %s: %w", e.Path, err)
		}
	}
	return nil
}

// Finish writes the files Put did not, from the blob store (verified, as
// Materialize does), then the symlinks.
func (t *Tree) Finish(ctx context.Context) error {
	t.mu.Lock()
	var rest []Entry
	for _, es := range t.todo {
		rest = append(rest, es...)
	}
	t.todo = map[string][]Entry{}
	t.mu.Unlock()
	err := forEach(ctx, len(rest), workers(), func(i int) error {
		return t.b.copyOut(rest[i], filepath.Join(t.dest, filepath.FromSlash(rest[i].Path)))
	})
	if err != nil {
		return err
	}
	// Links last: checkManifest guarantees no entry lives under one.
	for _, e := range t.links {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := os.Symlink(filepath.FromSlash(e.LinkTarget), filepath.Join(t.dest, filepath.FromSlash(e.Path))); err != nil {
			return fmt.Errorf("snapshot: materialize %s: %w", e.Path, err)
		}
	}
	return nil
}

// writeNew creates p (it must not exist) with data and mode perm.
func writeNew(p string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		// The umask may have dropped bits from the create mode.
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
