package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// BlobStore is a content-addressed directory: <Root>/sha256/<first 2 hex>/<remaining hex>. Blobs are
// written to a temp file in Root/tmp and renamed into place, which is atomic and safe for several
// processes writing the same blob.
type BlobStore struct {
	Root string
}

func validSHA(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Path returns where the blob lives, or "" if sha is not a lowercase hex sha256.
func (b BlobStore) Path(sha string) string {
	if !validSHA(sha) {
		return ""
	}
	return filepath.Join(b.Root, "sha256", sha[:2], sha[2:])
}

func (b BlobStore) Has(sha string) bool {
	p := b.Path(sha)
	if p == "" {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// Missing returns the sha256 values of m's regular-file entries that the store lacks (deduplicated, sorted).
func (b BlobStore) Missing(m *Manifest) []string {
	var out []string
	seen := map[string]bool{}
	for _, e := range m.Entries {
		if e.Mode == ModeSymlink || seen[e.SHA256] {
			continue
		}
		seen[e.SHA256] = true
		if !b.Has(e.SHA256) {
			out = append(out, e.SHA256)
		}
	}
	slices.Sort(out)
	return out
}

// Ingest copies every missing regular file of m from srcDir into the store, hashing while copying.
// A file whose content no longer matches m yields an error wrapping ErrSourceChanged.
func (b BlobStore) Ingest(ctx context.Context, srcDir string, m *Manifest) error {
	missing := b.Missing(m)
	if len(missing) == 0 {
		return ctx.Err()
	}
	from := make(map[string]string, len(missing))
	for _, e := range m.Entries {
		if _, ok := from[e.SHA256]; !ok && e.Mode != ModeSymlink {
			from[e.SHA256] = e.Path
		}
	}
	if err := os.MkdirAll(filepath.Join(b.Root, "tmp"), 0o755); err != nil {
		return fmt.Errorf("snapshot: blob store: %w", err)
	}
	return forEach(ctx, len(missing), workers(), func(i int) error {
		sha := missing[i]
		rel, err := SanitizeRelPath(from[sha])
		if err != nil {
			return fmt.Errorf("snapshot: manifest entry: %w", err)
		}
		if !validSHA(sha) {
			return fmt.Errorf("snapshot: manifest entry %s: invalid sha256 %q", rel, sha)
		}
		f, err := os.Open(filepath.Join(srcDir, filepath.FromSlash(rel)))
		if err != nil {
			return fmt.Errorf("snapshot: %s: %w: %w", rel, ErrSourceChanged, err)
		}
		defer f.Close()
		err = b.put(sha, f)
		if errors.Is(err, errHashMismatch) {
			return fmt.Errorf("snapshot: %s: %w", rel, ErrSourceChanged)
		}
		if err != nil {
			return fmt.Errorf("snapshot: storing %s: %w", rel, err)
		}
		return nil
	})
}

var errHashMismatch = errors.New("content does not match its sha256")

// put streams r into the store under sha, refusing content that does not hash to sha.
func (b BlobStore) put(sha string, r io.Reader) error {
	tmp, err := os.CreateTemp(filepath.Join(b.Root, "tmp"), sha[:8]+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	h := sha256.New()
	_, err = copyPooled(io.MultiWriter(tmp, h), r)
	if err == nil && hex.EncodeToString(h.Sum(nil)) != sha {
		err = errHashMismatch
	}
	if err == nil {
		// Read-only so that nothing edits a blob in place by accident.
		err = tmp.Chmod(0o444)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	dst := b.Path(sha)
	// The fan-out directory usually exists: made only when it does not.
	if err := os.Rename(tmp.Name(), dst); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// Materialize writes m's files into dest (created if missing; must be empty or absent) from the
// store: regular files are copied, never hard-linked, with their normalized mode, and symlinks are
// recreated. Every path goes through SanitizeRelPath first. On error dest may be partly written.
func (b BlobStore) Materialize(ctx context.Context, m *Manifest, dest string) error {
	entries, err := checkManifest(m)
	if err != nil {
		return err
	}
	if err := prepareDest(dest); err != nil {
		return err
	}

	dirs := map[string]bool{}
	var regular, links []Entry
	for _, e := range entries {
		if d := filepath.Dir(filepath.FromSlash(e.Path)); d != "." {
			dirs[d] = true
		}
		if e.Mode == ModeSymlink {
			links = append(links, e)
		} else {
			regular = append(regular, e)
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		if err := os.MkdirAll(filepath.Join(dest, d), 0o755); err != nil {
			return fmt.Errorf("snapshot: materialize: %w", err)
		}
	}
	err = forEach(ctx, len(regular), workers(), func(i int) error {
		return b.copyOut(regular[i], filepath.Join(dest, filepath.FromSlash(regular[i].Path)))
	})
	if err != nil {
		return err
	}
	// Links last: checkManifest guarantees no entry lives under one, so nothing is written through them.
	for _, e := range links {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := os.Symlink(filepath.FromSlash(e.LinkTarget), filepath.Join(dest, filepath.FromSlash(e.Path))); err != nil {
			return fmt.Errorf("snapshot: materialize %s: %w", e.Path, err)
		}
	}
	return nil
}

// checkManifest validates a manifest that may come from elsewhere and returns its entries with
// sanitized paths.
func checkManifest(m *Manifest) ([]Entry, error) {
	entries := slices.Clone(m.Entries)
	byPath := make(map[string]*Entry, len(entries))
	for i := range entries {
		e := &entries[i]
		p, err := SanitizeRelPath(e.Path)
		if err != nil {
			return nil, fmt.Errorf("snapshot: manifest entry: %w", err)
		}
		e.Path = p
		if byPath[p] != nil {
			return nil, fmt.Errorf("snapshot: manifest lists %s twice", p)
		}
		byPath[p] = e
		if !validSHA(e.SHA256) {
			return nil, fmt.Errorf("snapshot: manifest entry %s: invalid sha256 %q", p, e.SHA256)
		}
		switch e.Mode {
		case 0o644, 0o755:
		case ModeSymlink:
			sum := sha256.Sum256([]byte(e.LinkTarget))
			if hex.EncodeToString(sum[:]) != e.SHA256 {
				return nil, fmt.Errorf("snapshot: manifest entry %s: sha256 does not match the link target", p)
			}
		default:
			return nil, fmt.Errorf("snapshot: manifest entry %s: unsupported mode %o", p, e.Mode)
		}
	}
	readlink := func(rel string) (string, bool) {
		if e := byPath[rel]; e != nil && e.Mode == ModeSymlink {
			return e.LinkTarget, true
		}
		return "", false
	}
	for _, e := range entries {
		for d := e.Path; ; {
			i := strings.LastIndexByte(d, '/')
			if i < 0 {
				break
			}
			d = d[:i]
			if byPath[d] != nil {
				return nil, fmt.Errorf("snapshot: manifest entry %s lies under the non-directory entry %s", e.Path, d)
			}
		}
		if e.Mode == ModeSymlink && (isAbsTarget(e.LinkTarget) || strings.IndexByte(e.LinkTarget, 0) >= 0 ||
			!linkStaysInside(e.Path, e.LinkTarget, readlink)) {
			return nil, &SymlinkError{Path: e.Path, Target: e.LinkTarget}
		}
	}
	return entries, nil
}

func prepareDest(dest string) error {
	fi, err := os.Lstat(dest)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dest, 0o755); err != nil {
			return fmt.Errorf("snapshot: materialize: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("snapshot: materialize: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("snapshot: materialize: %s is not a directory", dest)
	}
	f, err := os.Open(dest)
	if err != nil {
		return fmt.Errorf("snapshot: materialize: %w", err)
	}
	defer f.Close()
	if names, _ := f.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("snapshot: materialize: %s is not empty", dest)
	}
	return nil
}

// copyOut copies a blob to dst, verifying its hash; a corrupt blob is removed so it gets re-sent.
func (b BlobStore) copyOut(e Entry, dst string) error {
	src, err := os.Open(b.Path(e.SHA256))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("snapshot: materialize %s: blob %s is missing from the store", e.Path, e.SHA256)
	}
	if err != nil {
		return fmt.Errorf("snapshot: materialize %s: %w", e.Path, err)
	}
	defer src.Close()
	perm := fs.FileMode(e.Mode)
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("snapshot: materialize %s: %w", e.Path, err)
	}
	h := sha256.New()
	_, err = copyPooled(io.MultiWriter(out, h), src)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("snapshot: materialize %s: %w", e.Path, err)
	}
	if hex.EncodeToString(h.Sum(nil)) != e.SHA256 {
		os.Remove(b.Path(e.SHA256))
		return fmt.Errorf("snapshot: materialize %s: blob %s is corrupt (removed from the store)", e.Path, e.SHA256)
	}
	// The umask may have dropped bits from the create mode.
	if err := os.Chmod(dst, perm); err != nil {
		return fmt.Errorf("snapshot: materialize %s: %w", e.Path, err)
	}
	return nil
}

// Put stores r under sha, refusing content that does not hash to sha: blobs that
// arrive from another host are verified on arrival.
func (b BlobStore) Put(sha string, r io.Reader) error {
	if !validSHA(sha) {
		return fmt.Errorf("snapshot: invalid blob name %q", sha)
	}
	if b.Has(sha) {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	if err := os.MkdirAll(filepath.Join(b.Root, "tmp"), 0o755); err != nil {
		return err
	}
	if err := b.put(sha, r); err != nil {
		return fmt.Errorf("snapshot: blob %s: %w", sha, err)
	}
	return nil
}

// ValidSHA reports whether s is a lowercase hex sha256, as blob names are.
func ValidSHA(s string) bool { return validSHA(s) }
