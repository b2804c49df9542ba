package snapshot

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeSpareSrc writes files (path -> content; content "->target" makes a symlink).
func writeSpareSrc(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		abs := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := os.Symlink(target, abs); err != nil {
				t.Fatal(err)
			}
			continue
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(p, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(abs, []byte(c), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// snap builds and stores a manifest of files.
func snap(t *testing.T, b BlobStore, files map[string]string) *Manifest {
	t.Helper()
	src := t.TempDir()
	writeSpareSrc(t, src, files)
	m, err := Build(context.Background(), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Ingest(context.Background(), src, m); err != nil {
		t.Fatal(err)
	}
	return m
}

// treeOf lists a directory: path -> "mode content" (or "link target"), dirs as "dir".
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := de.Info()
		if err != nil {
			return err
		}
		switch {
		case de.IsDir():
			out[rel] = "dir"
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[rel] = "link " + target
		default:
			b, _ := os.ReadFile(p)
			out[rel] = fi.Mode().Perm().String() + " " + string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, got, want string) {
	t.Helper()
	g, w := treeOf(t, got), treeOf(t, want)
	for p, v := range w {
		if g[p] != v {
			t.Errorf("%s: %q, want %q", p, g[p], v)
		}
	}
	for p, v := range g {
		if _, ok := w[p]; !ok {
			t.Errorf("%s: %q should not be there", p, v)
		}
	}
}

func readyCount(t *testing.T, spares string) int {
	t.Helper()
	names, err := readyNames(spares)
	if err != nil {
		t.Fatal(err)
	}
	return len(names)
}

// A spare tree patched into the next snapshot is exactly what materializing
// that snapshot from the blobs gives: changed, removed and new files, a file
// that becomes a directory and back, a file that becomes a link, modes.
func TestMaterializeFromSparePatches(t *testing.T) {
	ctx := context.Background()
	b := BlobStore{Root: t.TempDir()}
	spares := filepath.Join(t.TempDir(), "spares")
	old := snap(t, b, map[string]string{
		"train.py": "print(1)\n", "a/keep.txt": "keep", "a/change.txt": "v1", "a/gone.txt": "gone",
		"b/dir/deep.txt": "deep", "c": "file c", "d.txt": "d", "run.sh": "#!/bin/sh\n", "l": "->train.py",
		"gone/x/y.txt": "y",
	})
	next := snap(t, b, map[string]string{
		"train.py": "print(1)\n", "a/keep.txt": "keep", "a/change.txt": "v2", "a/new.txt": "new",
		"b": "b is a file now", "c/inside.txt": "c is a dir now", "d.txt": "->train.py", "run.sh": "#!/bin/sh\n",
		"l": "->a/keep.txt", "e/f/g.txt": "g",
	})
	if err := b.BuildSpare(ctx, old, spares); err != nil {
		t.Fatal(err)
	}
	if n := readyCount(t, spares); n != 1 {
		t.Fatalf("%d ready spare trees, want 1", n)
	}
	// Building it again for the same snapshot is a no-op.
	if err := b.BuildSpare(ctx, old, spares); err != nil {
		t.Fatal(err)
	}
	if n := readyCount(t, spares); n != 1 {
		t.Fatalf("%d ready spare trees after a second build, want 1", n)
	}
	dest := filepath.Join(t.TempDir(), "runs", "r1")
	reused, err := b.MaterializeFromSpare(ctx, next, dest, spares)
	if err != nil || !reused {
		t.Fatalf("reused %v, %v", reused, err)
	}
	want := t.TempDir()
	if err := b.Materialize(ctx, next, filepath.Join(want, "w")); err != nil {
		t.Fatal(err)
	}
	sameTree(t, dest, filepath.Join(want, "w"))
	if n := readyCount(t, spares); n != 0 {
		t.Fatalf("%d ready spare trees after the claim, want 0", n)
	}
	// None left: the next one comes from the blobs.
	dest2 := filepath.Join(t.TempDir(), "r2")
	if reused, err := b.MaterializeFromSpare(ctx, next, dest2, spares); err != nil || reused {
		t.Fatalf("without a spare tree: reused %v, %v", reused, err)
	}
	sameTree(t, dest2, filepath.Join(want, "w"))
	// A newer spare tree replaces the older one.
	if err := b.BuildSpare(ctx, old, spares); err != nil {
		t.Fatal(err)
	}
	if err := b.BuildSpare(ctx, next, spares); err != nil {
		t.Fatal(err)
	}
	if n := readyCount(t, spares); n != 1 {
		t.Fatalf("%d ready spare trees, want 1 (the newest)", n)
	}
	dest3 := filepath.Join(t.TempDir(), "r3")
	if reused, err := b.MaterializeFromSpare(ctx, next, dest3, spares); err != nil || !reused {
		t.Fatalf("reused %v, %v", reused, err)
	}
	sameTree(t, dest3, filepath.Join(want, "w"))
}

// A spare tree that anything touched after it was built is never used: the
// run is materialized from the blobs and gets the snapshot's content.
func TestMaterializeFromSpareRefusesATouchedTree(t *testing.T) {
	ctx := context.Background()
	files := map[string]string{"train.py": "print(1)\n", "a/data.txt": "pristine", "a/b/c.txt": "c"}
	cases := map[string]func(t *testing.T, tree string){
		"written": func(t *testing.T, tree string) {
			f, err := os.OpenFile(filepath.Join(tree, "a/data.txt"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString("tampere"); err != nil { // same size
				t.Fatal(err)
			}
			f.Close()
		},
		"chmod": func(t *testing.T, tree string) {
			if err := os.Chmod(filepath.Join(tree, "a/data.txt"), 0o755); err != nil {
				t.Fatal(err)
			}
		},
		"chmod and back": func(t *testing.T, tree string) {
			p := filepath.Join(tree, "a/data.txt")
			if err := os.Chmod(p, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("tampered"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, 0o644); err != nil {
				t.Fatal(err)
			}
		},
		"replaced": func(t *testing.T, tree string) {
			p := filepath.Join(tree, "a/data.txt")
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("pristine"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
		"file added": func(t *testing.T, tree string) {
			if err := os.WriteFile(filepath.Join(tree, "a/b/extra.txt"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
		"hard link made": func(t *testing.T, tree string) {
			if err := os.Link(filepath.Join(tree, "a/data.txt"), filepath.Join(filepath.Dir(tree), "outside")); err != nil {
				t.Fatal(err)
			}
		},
		"dir swapped for a link": func(t *testing.T, tree string) {
			moved := filepath.Join(filepath.Dir(tree), "moved")
			if err := os.Rename(filepath.Join(tree, "a/b"), moved); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(moved, filepath.Join(tree, "a/b")); err != nil {
				t.Fatal(err)
			}
		},
		"meta missing": func(t *testing.T, tree string) {
			if err := os.Remove(filepath.Join(filepath.Dir(tree), "meta.json")); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, touch := range cases {
		t.Run(name, func(t *testing.T) {
			b := BlobStore{Root: t.TempDir()}
			spares := filepath.Join(t.TempDir(), "spares")
			m := snap(t, b, files)
			if err := b.BuildSpare(ctx, m, spares); err != nil {
				t.Fatal(err)
			}
			names, _ := readyNames(spares)
			if len(names) != 1 {
				t.Fatalf("ready: %v", names)
			}
			touch(t, filepath.Join(spares, names[0], "tree"))
			dest := filepath.Join(t.TempDir(), "run")
			reused, err := b.MaterializeFromSpare(ctx, m, dest, spares)
			if err != nil {
				t.Fatal(err)
			}
			if reused {
				t.Fatal("a touched spare tree was used")
			}
			want := filepath.Join(t.TempDir(), "w")
			if err := b.Materialize(ctx, m, want); err != nil {
				t.Fatal(err)
			}
			sameTree(t, dest, want)
			if des, _ := os.ReadDir(spares); len(des) != 0 {
				t.Fatalf("the touched tree was left in %s: %v", spares, des)
			}
		})
	}
}

// What a run does to its directory (patched from a spare tree) reaches neither
// the blob store nor the next spare tree.
func TestSpareTreesShareNothingWithRuns(t *testing.T) {
	ctx := context.Background()
	b := BlobStore{Root: t.TempDir()}
	spares := filepath.Join(t.TempDir(), "spares")
	m := snap(t, b, map[string]string{"train.py": "print(1)\n", "data.txt": "pristine"})
	if err := b.BuildSpare(ctx, m, spares); err != nil {
		t.Fatal(err)
	}
	run1 := filepath.Join(t.TempDir(), "run1")
	if reused, err := b.MaterializeFromSpare(ctx, m, run1, spares); err != nil || !reused {
		t.Fatalf("reused %v, %v", reused, err)
	}
	// The script makes its file writable and rewrites it.
	p := filepath.Join(run1, "data.txt")
	if err := os.Chmod(p, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("overwritten by the script"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := b.BuildSpare(ctx, m, spares); err != nil {
		t.Fatal(err)
	}
	run2 := filepath.Join(t.TempDir(), "run2")
	if reused, err := b.MaterializeFromSpare(ctx, m, run2, spares); err != nil || !reused {
		t.Fatalf("reused %v, %v", reused, err)
	}
	if got, _ := os.ReadFile(filepath.Join(run2, "data.txt")); string(got) != "pristine" {
		t.Fatalf("next run's data.txt = %q", got)
	}
	for _, e := range m.Entries {
		if e.Path == "data.txt" {
			if got, _ := os.ReadFile(b.Path(e.SHA256)); string(got) != "pristine" {
				t.Fatalf("blob = %q", got)
			}
		}
	}
}
