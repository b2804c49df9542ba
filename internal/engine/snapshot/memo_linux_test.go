//go:build linux

package snapshot

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// TestMemoSeesEveryChange: an unchanged tree is answered from memory (the same
// manifest), and every kind of change under it, at any depth, makes the next
// Build walk again and see it.
func TestMemoSeesEveryChange(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	dir := filepath.Join(root, "src")
	writeTree(t, dir, map[string]string{"train.py": "print(1)\n", "pkg/a/b.py": "x = 1\n", "pkg/c.txt": "c"})
	var mm Memo
	opts := Options{StatCacheDir: filepath.Join(root, "cache")}

	var plain *Manifest
	for i := range plainBuilds {
		m, err := mm.Build(ctx, dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		if mm.started {
			t.Fatalf("Build %d of a tree started inotify: it is watched after %d plain ones", i+1, plainBuilds)
		}
		if plain != nil && m == plain {
			t.Fatal("a plain Build answered from memory")
		}
		plain = m
	}
	first, err := mm.Build(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	again, err := mm.Build(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if again != first || first == plain || plain.Hash != first.Hash {
		t.Fatalf("unchanged tree: manifests %p %p %p (%s %s), want the second memoized", plain, first, again, plain.Hash, again.Hash)
	}
	for range plainBuilds { // other options: plain builds of their own
		_, _ = mm.Build(ctx, dir, Options{})
	}
	if other, _ := mm.Build(ctx, dir, Options{}); other == first {
		t.Fatal("other options answered from the memo of different ones")
	}

	prev := first
	steps := []struct {
		name   string
		change func(t *testing.T)
	}{
		{"same-size content change, deep", func(t *testing.T) { write(t, filepath.Join(dir, "pkg/a/b.py"), "x = 2\n") }},
		{"chmod +x", func(t *testing.T) { chmod(t, filepath.Join(dir, "train.py"), 0o755) }},
		{"new file in a subdirectory", func(t *testing.T) { write(t, filepath.Join(dir, "pkg/a/new.py"), "n") }},
		{"new directory with a file", func(t *testing.T) {
			if err := os.MkdirAll(filepath.Join(dir, "pkg/d/e"), 0o755); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(dir, "pkg/d/e/f.py"), "f")
		}},
		{"file in the new directory changed", func(t *testing.T) { write(t, filepath.Join(dir, "pkg/d/e/f.py"), "g") }},
		{"file removed", func(t *testing.T) { remove(t, filepath.Join(dir, "pkg/c.txt")) }},
		{"file renamed", func(t *testing.T) {
			if err := os.Rename(filepath.Join(dir, "pkg/a/new.py"), filepath.Join(dir, "pkg/a/renamed.py")); err != nil {
				t.Fatal(err)
			}
		}},
		{"directory removed", func(t *testing.T) { remove(t, filepath.Join(dir, "pkg/d")) }},
		{"ignore file added", func(t *testing.T) { write(t, filepath.Join(dir, ".amlignore"), "pkg/a/\n") }},
		{"root replaced by another directory at the same path", func(t *testing.T) {
			if err := os.Rename(dir, filepath.Join(root, "old")); err != nil {
				t.Fatal(err)
			}
			writeTree(t, dir, map[string]string{"train.py": "print(2)\n"})
		}},
	}
	for _, s := range steps {
		s.change(t)
		m, err := mm.Build(ctx, dir, opts)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		want, err := Build(ctx, dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if m == prev || m.Hash == prev.Hash {
			t.Fatalf("%s: the memo answered the old manifest %s", s.name, prev.Hash)
		}
		if m.Hash != want.Hash {
			t.Fatalf("%s: memo gave %s, a fresh Build %s", s.name, m.Hash, want.Hash)
		}
		if hit, _ := mm.Build(ctx, dir, opts); hit != m {
			t.Fatalf("%s: the tree is unchanged since, but it was walked again", s.name)
		}
		prev = m
	}
}

// TestMemoConcurrentBuilds: the runs of one plan ask at once; they all get the
// same, correct manifest, and the tree is walked once.
func TestMemoConcurrentBuilds(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"a.py": "a", "b/c.py": "c"})
	want, err := Build(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mm Memo
	warm(t, &mm, dir)
	got := make([]*Manifest, 10)
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := mm.Build(ctx, dir, Options{})
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = m
		}()
	}
	wg.Wait()
	for i, m := range got {
		if m == nil || m.Hash != want.Hash {
			t.Fatalf("build %d: %v, want %s", i, m, want.Hash)
		}
		if m != got[0] {
			t.Fatalf("build %d walked the tree again", i)
		}
	}
}

// warm makes the plain Builds after which mm watches dir.
func warm(t *testing.T, mm *Memo, dir string) {
	t.Helper()
	for range plainBuilds {
		if _, err := mm.Build(context.Background(), dir, Options{}); err != nil {
			t.Fatal(err)
		}
	}
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func chmod(t *testing.T, p string, m os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, m); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, p string) {
	t.Helper()
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
}

// TestMemoLeavesLargeTreesAlone: a tree with more directories than a tree may
// watch is walked every time, correctly, and holds no watches afterwards.
func TestMemoLeavesLargeTreesAlone(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for i := range maxWatchesPerTree + 1 {
		if err := os.Mkdir(filepath.Join(dir, "d"+strconv.Itoa(i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(dir, "d7", "f.py"), "f")
	var mm Memo
	warm(t, &mm, dir)
	first, err := mm.Build(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	second, err := mm.Build(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if first == second {
		t.Fatal("a tree over the watch limit was memoized")
	}
	if first.Hash != second.Hash || first.Files != 1 {
		t.Fatalf("manifests %s (%d files) and %s differ", first.Hash, first.Files, second.Hash)
	}
	mm.mu.Lock()
	defer mm.mu.Unlock()
	if len(mm.byWD) != 0 {
		t.Fatalf("%d watches left after the tree was given up", len(mm.byWD))
	}
}
