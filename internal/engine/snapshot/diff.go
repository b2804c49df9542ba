package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// Change is one file that differs between two manifests.
type Change struct {
	Path string
	Kind string // "added", "changed" (content or mode) or "removed"
}

// Diff lists the files added, changed and removed from old to new, in path order.
func Diff(old, new *Manifest) []Change {
	var out []Change
	i, j := 0, 0
	for i < len(old.Entries) || j < len(new.Entries) {
		switch {
		case j == len(new.Entries) || (i < len(old.Entries) && old.Entries[i].Path < new.Entries[j].Path):
			out = append(out, Change{old.Entries[i].Path, "removed"})
			i++
		case i == len(old.Entries) || new.Entries[j].Path < old.Entries[i].Path:
			out = append(out, Change{new.Entries[j].Path, "added"})
			j++
		default:
			o, n := old.Entries[i], new.Entries[j]
			if o.SHA256 != n.SHA256 || o.Mode != n.Mode || o.LinkTarget != n.LinkTarget {
				out = append(out, Change{n.Path, "changed"})
			}
			i, j = i+1, j+1
		}
	}
	return out
}

// manifestFile is how a manifest is kept in the blob store.
type manifestFile struct {
	Entries []Entry `json:"entries"`
}

// maxManifestBlob bounds a stored manifest read back (the file-count limit
// keeps real ones far below it).
const maxManifestBlob = 256 << 20

// PutManifest stores m as a blob of its own (content-addressed like the
// files) and returns its sha256, so a later plan can say which files changed.
func (b BlobStore) PutManifest(m *Manifest) (string, error) {
	body, err := json.Marshal(manifestFile{Entries: m.Entries})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(body)
	sha := hex.EncodeToString(sum[:])
	if err := b.Put(sha, bytes.NewReader(body)); err != nil {
		return "", err
	}
	return sha, nil
}

// GetManifest reads a manifest PutManifest stored.
func (b BlobStore) GetManifest(sha string) (*Manifest, error) {
	p := b.Path(sha)
	if p == "" {
		return nil, fmt.Errorf("snapshot: invalid manifest blob %q", sha)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, maxManifestBlob))
	if err != nil {
		return nil, err
	}
	var mf manifestFile
	if err := json.Unmarshal(body, &mf); err != nil {
		return nil, fmt.Errorf("snapshot: manifest blob %s: %w", sha, err)
	}
	return newManifest(mf.Entries), nil
}
