package snapshot

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// A Tree writes what Put gives it (verified), the rest from the store at
// Finish, and ends up as Materialize would: own inodes, links last.
func TestTreePutThenFinish(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{"a.txt": "alpha\n", "d/b.txt": "beta\n", "d/e/c.txt": "alpha\n", "link": "->d/b.txt"})
	m := build(t, src, Options{})
	store := BlobStore{Root: t.TempDir()}
	if err := store.Ingest(context.Background(), src, m); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "runs", "r1")
	tree, err := store.NewTree(m, dest)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := m.Lookup("a.txt")
	b, _ := m.Lookup("d/b.txt")
	if err := tree.Put(a.SHA256, []byte("alpha\n")); err != nil {
		t.Fatal(err)
	}
	// Content that does not hash to its name is refused and left to Finish.
	if err := tree.Put(b.SHA256, []byte("not beta\n")); err == nil {
		t.Fatal("Put accepted content that does not match its sha256")
	}
	if _, err := os.Stat(filepath.Join(dest, "d", "b.txt")); err == nil {
		t.Fatal("refused content was written")
	}
	if err := tree.Put(a.SHA256, []byte("alpha\n")); err != nil { // again: nothing left to write
		t.Fatal(err)
	}
	if err := tree.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"a.txt": "alpha\n", "d/b.txt": "beta\n", "d/e/c.txt": "alpha\n", "link": "beta\n"} {
		if got, err := os.ReadFile(filepath.Join(dest, p)); err != nil || string(got) != want {
			t.Fatalf("%s: %q, %v; want %q", p, got, err, want)
		}
	}
	for _, p := range []string{"a.txt", "d/e/c.txt", "d/b.txt"} {
		e, _ := m.Lookup(p)
		bst, _ := os.Stat(store.Path(e.SHA256))
		fst, _ := os.Stat(filepath.Join(dest, p))
		if os.SameFile(bst, fst) {
			t.Fatalf("%s shares the blob's inode", p)
		}
		if fst.Mode().Perm() != 0o644 {
			t.Fatalf("%s: mode %v", p, fst.Mode())
		}
	}
	// The directory must be new.
	if _, err := store.NewTree(m, dest); err == nil {
		t.Fatal("NewTree accepted an existing directory")
	}
}
