package snapshot

import (
	"context"
	"errors"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeTree creates files (path -> content) under dir. A content starting with "->" makes a symlink
// to the rest of the string instead.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for _, p := range slices.Sorted(maps.Keys(files)) {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		c := files[p]
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := os.Symlink(filepath.FromSlash(target), full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func build(t testing.TB, dir string, opts Options) *Manifest {
	t.Helper()
	m, err := Build(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return m
}

func paths(m *Manifest) []string {
	var out []string
	for _, e := range m.Entries {
		out = append(out, e.Path)
	}
	return out
}

// settle waits for the filesystem clock to tick past the files just written, so the stat cache
// (which skips files changed during the current tick) will keep them.
func settle() { time.Sleep(30 * time.Millisecond) }

func TestBuildDeterministic(t *testing.T) {
	files := map[string]string{
		"train.py":        "print('hi')\n",
		"a.txt":           "a",
		"a/b/c.txt":       "c",
		"data/x.csv":      "1,2\n",
		"link":            "->a/b/c.txt",
		".amlignore":      "*.tmp\n",
		"zzz/empty/.keep": "",
	}
	d1, d2 := t.TempDir(), t.TempDir()
	writeTree(t, d1, files)
	// Second tree: reverse creation order and scrambled mtimes.
	keys := slices.Sorted(maps.Keys(files))
	slices.Reverse(keys)
	for i, k := range keys {
		writeTree(t, d2, map[string]string{k: files[k]})
		if !strings.HasPrefix(files[k], "->") {
			ts := time.Unix(int64(1_000_000+i*7919), 0)
			if err := os.Chtimes(filepath.Join(d2, k), ts, ts); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(d2, "only/empty/dirs"), 0o755); err != nil {
		t.Fatal(err)
	}

	m1, m2 := build(t, d1, Options{}), build(t, d2, Options{})
	if m1.Hash != m2.Hash {
		t.Fatalf("hash differs: %s vs %s", m1.Hash, m2.Hash)
	}
	if again := build(t, d1, Options{}); again.Hash != m1.Hash {
		t.Fatalf("hash not stable: %s vs %s", again.Hash, m1.Hash)
	}
	want := []string{".amlignore", "a.txt", "a/b/c.txt", "data/x.csv", "link", "train.py", "zzz/empty/.keep"}
	if got := paths(m1); !slices.Equal(got, want) {
		t.Fatalf("paths = %v, want %v", got, want)
	}
	if m1.Files != len(want) || m1.Bytes != int64(len("print('hi')\n")+1+1+4+len("*.tmp\n")) {
		t.Fatalf("Files=%d Bytes=%d", m1.Files, m1.Bytes)
	}
	if !strings.HasPrefix(m1.Hash, "sha256:") || len(m1.Hash) != 7+64 {
		t.Fatalf("bad hash format %q", m1.Hash)
	}
	l, ok := m1.Lookup("link")
	if !ok || l.Mode != ModeSymlink || l.LinkTarget != "a/b/c.txt" || l.Size != int64(len("a/b/c.txt")) {
		t.Fatalf("link entry = %+v, %v", l, ok)
	}
	if e, ok := m1.Lookup("a.txt"); !ok || e.Mode != 0o644 || e.Size != 1 ||
		e.SHA256 != "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb" {
		t.Fatalf("a.txt entry = %+v, %v", e, ok)
	}
	if _, ok := m1.Lookup("a"); ok {
		t.Fatal("directories must not be entries")
	}
}

func TestBuildHashChanges(t *testing.T) {
	base := map[string]string{"train.py": "print(1)\n", "lib/util.py": "x = 1\n", "l": "->lib/util.py"}
	tests := []struct {
		name    string
		mutate  func(t *testing.T, dir string)
		changed bool
	}{
		{"content", func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "train.py"), []byte("print(2)\n"), 0o644))
		}, true},
		{"exec bit", func(t *testing.T, dir string) { must(t, os.Chmod(filepath.Join(dir, "train.py"), 0o744)) }, true},
		{"non-exec permission", func(t *testing.T, dir string) { must(t, os.Chmod(filepath.Join(dir, "train.py"), 0o600)) }, false},
		{"mtime only", func(t *testing.T, dir string) {
			ts := time.Now().Add(-48 * time.Hour)
			must(t, os.Chtimes(filepath.Join(dir, "train.py"), ts, ts))
		}, false},
		{"rename", func(t *testing.T, dir string) {
			must(t, os.Rename(filepath.Join(dir, "lib/util.py"), filepath.Join(dir, "lib/util2.py")))
		}, true},
		{"new file", func(t *testing.T, dir string) { writeTree(t, dir, map[string]string{"new.txt": ""}) }, true},
		{"empty dir", func(t *testing.T, dir string) { must(t, os.Mkdir(filepath.Join(dir, "empty"), 0o755)) }, false},
		{"link target", func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "l")))
			must(t, os.Symlink("train.py", filepath.Join(dir, "l")))
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, base)
			before := build(t, dir, Options{})
			tt.mutate(t, dir)
			after := build(t, dir, Options{})
			if (before.Hash != after.Hash) != tt.changed {
				t.Fatalf("hash changed = %v, want %v", before.Hash != after.Hash, tt.changed)
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestIgnoreRules(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		setup func(t *testing.T, dir string)
		want  []string
	}{
		{
			name:  "gitignore",
			files: map[string]string{".gitignore": "*.log\n# comment\n\n/out\n", "a.py": "", "x.log": "", "sub/y.log": "", "out/o": "", "sub/out/o": ""},
			want:  []string{".gitignore", "a.py", "sub/out/o"},
		},
		{
			name:  "amlignore overrides gitignore",
			files: map[string]string{".gitignore": "*.py\n", ".amlignore": "*.csv\n", "a.py": "", "d.csv": ""},
			want:  []string{".amlignore", ".gitignore", "a.py"},
		},
		{
			name: "nested ignore file is scoped to its directory",
			files: map[string]string{
				"sub/.gitignore": "*.bin\n/local\nx/y\n", "a.bin": "", "sub/b.bin": "", "sub/deep/c.bin": "",
				"local": "", "sub/local": "", "sub/deep/local": "", "sub/x/y": "", "x/y": "",
			},
			want: []string{"a.bin", "local", "sub/.gitignore", "sub/deep/local", "x/y"},
		},
		{
			name:  "nested amlignore only replaces the gitignore of its own directory",
			files: map[string]string{".gitignore": "*.log\n", "sub/.gitignore": "*.txt\n", "sub/.amlignore": "*.md\n", "sub/a.log": "", "sub/b.txt": "", "sub/c.md": ""},
			want:  []string{".gitignore", "sub/.amlignore", "sub/.gitignore", "sub/b.txt"},
		},
		{
			name:  "negation",
			files: map[string]string{".gitignore": "*.log\n!keep.log\n", "a.log": "", "keep.log": "", "sub/keep.log": ""},
			want:  []string{".gitignore", "keep.log", "sub/keep.log"},
		},
		{
			name:  "deeper file overrides shallower",
			files: map[string]string{".gitignore": "*.log\n", "sub/.gitignore": "!important.log\n", "important.log": "", "sub/important.log": "", "sub/other.log": ""},
			want:  []string{".gitignore", "sub/.gitignore", "sub/important.log"},
		},
		{
			name:  "negation cannot re-include a file in an excluded directory",
			files: map[string]string{".gitignore": "data/\n!data/keep.txt\n", "data/keep.txt": "", "data/x": ""},
			want:  []string{".gitignore"},
		},
		{
			name:  "a name negation does not re-include children of a directory with that name",
			files: map[string]string{".gitignore": "*.txt\n!foo\n", "foo/a.txt": "", "foo/b.py": ""},
			want:  []string{".gitignore", "foo/b.py"},
		},
		{
			name:  "directory-only pattern",
			files: map[string]string{".gitignore": "build/\n", "build/x": "", "sub/build/y": "", "tools/build": ""},
			want:  []string{".gitignore", "tools/build"},
		},
		{
			name:  "double star",
			files: map[string]string{".gitignore": "**/cache\nlogs/**\na/**/z\n", "cache/1": "", "x/y/cache/2": "", "logs/l": "", "logsfile": "", "a/z": "", "a/b/c/z": "", "b/a/z": ""},
			want:  []string{".gitignore", "b/a/z", "logsfile"},
		},
		{
			name:  "ignore file ignoring itself",
			files: map[string]string{".amlignore": ".amlignore\n*.ipynb\n", "n.ipynb": "", "t.py": ""},
			want:  []string{"t.py"},
		},
		{
			name:  "escapes and trailing spaces",
			files: map[string]string{".gitignore": "\\#hash\n\\!bang\ntrail   \nsp\\ \n", "#hash": "", "!bang": "", "trail": "", "sp ": "", "sp": ""},
			want:  []string{".gitignore", "sp"},
		},
		{
			name:  "crlf ignore file",
			files: map[string]string{".gitignore": "*.log\r\n", "a.log": "", "b": ""},
			want:  []string{".gitignore", "b"},
		},
		{
			name: ".git excluded at any depth",
			files: map[string]string{
				".git/HEAD": "ref", ".git/objects/ab/cd": "x", "sub/.git": "gitdir: ../.git/modules/sub",
				"vendor/lib/.git/config": "", "vendor/lib/a.go": "", ".gitignore": "!.git\n", ".github/ci.yml": "",
			},
			want: []string{".github/ci.yml", ".gitignore", "vendor/lib/a.go"},
		},
		{
			name:  "ignored directory is not walked",
			files: map[string]string{".gitignore": "venv/\n", "venv/bin/python": "->/usr/bin/python3", "venv/escape": "->../../../../etc", "ok.py": ""},
			setup: func(t *testing.T, dir string) {
				l, err := net.Listen("unix", filepath.Join(dir, "venv", "sock"))
				must(t, err)
				t.Cleanup(func() { l.Close() })
				must(t, os.Mkdir(filepath.Join(dir, "venv", "locked"), 0o000))
			},
			want: []string{".gitignore", "ok.py"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tt.files)
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			if got := paths(build(t, dir, Options{})); !slices.Equal(got, tt.want) {
				t.Fatalf("paths = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSymlinks(t *testing.T) {
	outside := t.TempDir()
	tests := []struct {
		name    string
		files   map[string]string
		refused string // path of the refused link, "" when the build must succeed
	}{
		{"file link inside", map[string]string{"a/f": "x", "b/l": "->../a/f"}, ""},
		{"dir link inside", map[string]string{"a/f": "x", "l": "->a"}, ""},
		{"link to the root itself", map[string]string{"l": "->."}, ""},
		{"dangling inside", map[string]string{"l": "->missing/file"}, ""},
		{"absolute", map[string]string{"data": "->" + outside}, "data"},
		{"absolute to a file inside is still refused", map[string]string{"f": "x", "l": "->/proc/self/cwd/f"}, "l"},
		{"dotdot", map[string]string{"sub/l": "->../../x"}, "sub/l"},
		{"dotdot dangling", map[string]string{"l": "->../nothing/here"}, "l"},
		{"through an inner link", map[string]string{"d": "->.", "l": "->d/../escape"}, "l"},
		{"through a chain", map[string]string{"a": "->b", "b": "->..", "sub/l": "->../a/x"}, "a"},
		{"loop", map[string]string{"a": "->b", "b": "->a", "l": "->a/x"}, "a"},
		{"ignored link outside is fine", map[string]string{".amlignore": "out\n", "out": "->/etc"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tt.files)
			m, err := Build(context.Background(), dir, Options{})
			if tt.refused == "" {
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				for _, e := range m.Entries {
					if e.Mode == ModeSymlink && (e.LinkTarget == "" || filepath.IsAbs(e.LinkTarget)) {
						t.Fatalf("bad link entry %+v", e)
					}
				}
				return
			}
			var se *SymlinkError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want *SymlinkError", err)
			}
			if se.Path != tt.refused {
				t.Fatalf("refused %q, want %q", se.Path, tt.refused)
			}
			if msg := err.Error(); !strings.Contains(msg, "symlink "+tt.refused+" -> ") || !strings.Contains(msg, "leaves the source directory") {
				t.Fatalf("message %q", msg)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"file": "x"})
	l, err := net.Listen("unix", filepath.Join(dir, "sub.sock"))
	must(t, err)
	defer l.Close()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name string
		ctx  context.Context
		dir  string
		want string
		is   error
	}{
		{"missing", context.Background(), filepath.Join(dir, "nope"), filepath.Join(dir, "nope") + " does not exist", nil},
		{"not a directory", context.Background(), filepath.Join(dir, "file"), filepath.Join(dir, "file") + " is not a directory", nil},
		{"socket", context.Background(), dir, "sub.sock is a socket", nil},
		{"canceled", canceled, dir, "", context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(tt.ctx, tt.dir, Options{})
			if err == nil {
				t.Fatal("no error")
			}
			if tt.want != "" && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %q does not contain %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("err %v is not %v", err, tt.is)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	files := map[string]string{
		"big.bin":      strings.Repeat("b", 5000),
		"data/mid.csv": strings.Repeat("m", 3000),
		"small.py":     "s",
		"l":            "->big.bin",
	}
	for i := range 12 {
		files["many/f"+string(rune('a'+i))] = strings.Repeat("x", 10+i)
	}
	tests := []struct {
		name        string
		limits      Limits
		wantErr     bool
		wantInError []string
	}{
		{"defaults", Limits{}, false, nil},
		{"exactly at the limits", Limits{MaxBytes: 5000 + 3000 + 1 + 186, MaxFiles: 16}, false, nil},
		{"bytes", Limits{MaxBytes: 4000}, true, []string{"8.0 KB in 16 files", "over the limit of 3.9 KB / 2000 files", "largest files: big.bin (4.9 KB), data/mid.csv (2.9 KB), many/fl (21 B)", "many/fe (14 B); add"}},
		{"files", Limits{MaxFiles: 10}, true, []string{"in 16 files, over the limit of 300.0 MB / 10 files", "largest files: big.bin (4.9 KB), data/mid.csv (2.9 KB), many/fl (21 B)", "most files are under: many/ (12 files), data/ (1 files)"}},
	}
	dir := t.TempDir()
	writeTree(t, dir, files)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := hashedFiles.Load()
			m, err := Build(context.Background(), dir, Options{Limits: tt.limits})
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				if m.Files != 16 || m.Bytes != 5000+3000+1+186 {
					t.Fatalf("Files=%d Bytes=%d", m.Files, m.Bytes)
				}
				return
			}
			var le *LimitError
			if !errors.As(err, &le) {
				t.Fatalf("err = %v, want *LimitError", err)
			}
			if n := hashedFiles.Load() - before; n != 0 {
				t.Fatalf("hashed %d files before refusing", n)
			}
			if len(le.Largest) != 10 || le.Largest[0].Path != "big.bin" || le.Largest[1].Path != "data/mid.csv" {
				t.Fatalf("Largest = %+v", le.Largest)
			}
			for i := 1; i < len(le.Largest); i++ {
				if le.Largest[i].Size > le.Largest[i-1].Size || le.Largest[i].Mode == ModeSymlink {
					t.Fatalf("Largest not sorted by size or holds a link: %+v", le.Largest)
				}
			}
			if le.Files != 16 || le.Bytes != 5000+3000+1+186 || le.Dir != dir {
				t.Fatalf("LimitError = %+v", le)
			}
			msg := err.Error()
			for _, s := range append(tt.wantInError, "snapshot of "+dir+" is ", "add them to .amlignore or raise the provider's snapshot limits") {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q\n does not contain %q", msg, s)
				}
			}
		})
	}
}

func TestStatCache(t *testing.T) {
	dir, cacheDir := t.TempDir(), t.TempDir()
	files := map[string]string{"l": "->a.txt"}
	for i := range 50 {
		files[filepath.ToSlash(filepath.Join("d"+string(rune('a'+i%5)), "f"+string(rune('a'+i/5))+".txt"))] = strings.Repeat("z", i)
	}
	files["a.txt"] = "version-1"
	writeTree(t, dir, files)
	settle()
	opts := Options{StatCacheDir: cacheDir}

	hashedBy := func(f func()) int64 {
		before := hashedFiles.Load()
		f()
		return hashedFiles.Load() - before
	}
	var first, second *Manifest
	if n := hashedBy(func() { first = build(t, dir, opts) }); n != 51 {
		t.Fatalf("cold build hashed %d files, want 51", n)
	}
	if n := hashedBy(func() { second = build(t, dir, opts) }); n != 0 {
		t.Fatalf("warm build hashed %d files, want 0", n)
	}
	if first.Hash != second.Hash || first.Hash != build(t, dir, Options{}).Hash {
		t.Fatal("cached hash differs from an uncached build")
	}
	if ents, _ := os.ReadDir(cacheDir); len(ents) != 1 {
		t.Fatalf("cache dir holds %d files, want 1 (temp files must be cleaned up)", len(ents))
	}

	aTxt := filepath.Join(dir, "a.txt")
	fi, err := os.Stat(aTxt)
	must(t, err)
	tests := []struct {
		name   string
		mutate func(t *testing.T)
		hashed int64
	}{
		{"same size, new content, new mtime", func(t *testing.T) {
			must(t, os.WriteFile(aTxt, []byte("version-2"), 0o644))
			ts := fi.ModTime().Add(-time.Hour)
			must(t, os.Chtimes(aTxt, ts, ts))
		}, 1},
		{"same size, new content, mtime restored (ctime differs)", func(t *testing.T) {
			must(t, os.WriteFile(aTxt, []byte("version-3"), 0o644))
			must(t, os.Chtimes(aTxt, fi.ModTime(), fi.ModTime()))
		}, 1},
		{"replaced by a new file (inode differs)", func(t *testing.T) {
			tmp := aTxt + ".new"
			must(t, os.WriteFile(tmp, []byte("version-4"), 0o644))
			must(t, os.Chtimes(tmp, fi.ModTime(), fi.ModTime()))
			must(t, os.Rename(tmp, aTxt))
		}, 1},
		{"corrupt cache file", func(t *testing.T) {
			ents, err := os.ReadDir(cacheDir)
			must(t, err)
			must(t, os.WriteFile(filepath.Join(cacheDir, ents[0].Name()), []byte("\x00garbage\xff{not gob"), 0o644))
		}, 51},
		{"truncated cache file", func(t *testing.T) {
			ents, err := os.ReadDir(cacheDir)
			must(t, err)
			p := filepath.Join(cacheDir, ents[0].Name())
			data, err := os.ReadFile(p)
			must(t, err)
			must(t, os.WriteFile(p, data[:len(data)/2], 0o644))
		}, 51},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.mutate(t)
			settle()
			want := build(t, dir, Options{}).Hash
			var got *Manifest
			if n := hashedBy(func() { got = build(t, dir, opts) }); n != tt.hashed {
				t.Fatalf("build hashed %d files, want %d", n, tt.hashed)
			}
			if got.Hash != want {
				t.Fatalf("cached build hash %s, want %s", got.Hash, want)
			}
			if n := hashedBy(func() { build(t, dir, opts) }); n != 0 {
				t.Fatalf("rebuild hashed %d files, want 0", n)
			}
		})
	}
	if second.Hash == build(t, dir, opts).Hash {
		t.Fatal("edits did not change the hash")
	}
}

func TestStatCacheSkipsFilesChangedThisTick(t *testing.T) {
	dir, cacheDir := t.TempDir(), t.TempDir()
	writeTree(t, dir, map[string]string{"a": "1"})
	// A file stamped in the future looks as if it changed during the build: never cached.
	future := time.Now().Add(time.Hour)
	must(t, os.Chtimes(filepath.Join(dir, "a"), future, future))
	opts := Options{StatCacheDir: cacheDir}
	build(t, dir, opts)
	before := hashedFiles.Load()
	build(t, dir, opts)
	if n := hashedFiles.Load() - before; n != 1 {
		t.Fatalf("hashed %d, want 1", n)
	}
}

func TestIngestMaterializeRoundTrip(t *testing.T) {
	src, store := t.TempDir(), BlobStore{Root: t.TempDir()}
	writeTree(t, src, map[string]string{
		"train.py":        "import lib\n",
		"lib/__init__.py": "",
		"lib/dup.txt":     "same",
		"other/dup.txt":   "same",
		"run.sh":          "#!/bin/sh\n",
		"lnk":             "->lib",
		"lib/up":          "->../train.py",
		"dangling":        "->not/yet",
	})
	must(t, os.Chmod(filepath.Join(src, "run.sh"), 0o700))
	m := build(t, src, Options{})
	ctx := context.Background()

	missing := store.Missing(m)
	if len(missing) != 4 || !slices.IsSorted(missing) {
		t.Fatalf("Missing = %v, want 4 sorted unique blobs", missing)
	}
	must(t, store.Ingest(ctx, src, m))
	if got := store.Missing(m); len(got) != 0 {
		t.Fatalf("Missing after Ingest = %v", got)
	}
	for _, sha := range missing {
		if !store.Has(sha) || !strings.HasPrefix(store.Path(sha), filepath.Join(store.Root, "sha256", sha[:2], sha[2:])) {
			t.Fatalf("blob %s not stored at %s", sha, store.Path(sha))
		}
	}
	must(t, store.Ingest(ctx, src, m)) // nothing left to do

	dest := filepath.Join(t.TempDir(), "run", "snapshot")
	must(t, store.Materialize(ctx, m, dest))
	back := build(t, dest, Options{})
	if back.Hash != m.Hash {
		t.Fatalf("materialized hash %s, want %s", back.Hash, m.Hash)
	}
	fi, err := os.Stat(filepath.Join(dest, "run.sh"))
	must(t, err)
	if fi.Mode().Perm() != 0o755 {
		t.Fatalf("run.sh mode %v, want 0755", fi.Mode())
	}
	if fi, err := os.Lstat(filepath.Join(dest, "lnk")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("lnk is not a symlink: %v %v", fi, err)
	}
	// Copies, not links into the store: editing the run's copy leaves the blob intact.
	must(t, os.WriteFile(filepath.Join(dest, "lib/dup.txt"), []byte("edited"), 0o644))
	if e, _ := m.Lookup("lib/dup.txt"); !store.Has(e.SHA256) {
		t.Fatal("blob lost")
	}
	data, err := os.ReadFile(store.Path(mustLookup(t, m, "other/dup.txt").SHA256))
	if err != nil || string(data) != "same" {
		t.Fatalf("blob content %q, %v", data, err)
	}

	if err := store.Materialize(ctx, m, dest); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("materialize into non-empty dest: %v", err)
	}
	empty := t.TempDir()
	must(t, store.Materialize(ctx, m, empty))

	// A corrupt blob is detected and dropped, so the next Ingest sends it again.
	p := store.Path(mustLookup(t, m, "train.py").SHA256)
	must(t, os.Chmod(p, 0o644))
	must(t, os.WriteFile(p, []byte("tampered\n"), 0o644))
	if err := store.Materialize(ctx, m, t.TempDir()); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt blob: %v", err)
	}
	if store.Has(mustLookup(t, m, "train.py").SHA256) {
		t.Fatal("corrupt blob kept")
	}
	must(t, store.Ingest(ctx, src, m))
	must(t, store.Materialize(ctx, m, t.TempDir()))
}

func mustLookup(t *testing.T, m *Manifest, p string) Entry {
	t.Helper()
	e, ok := m.Lookup(p)
	if !ok {
		t.Fatalf("no entry %s", p)
	}
	return e
}

func TestIngestDetectsChangedSource(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(dir string) error
	}{
		{"edited", func(dir string) error { return os.WriteFile(filepath.Join(dir, "data/x.csv"), []byte("2,2\n"), 0o644) }},
		{"deleted", func(dir string) error { return os.Remove(filepath.Join(dir, "data/x.csv")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, store := t.TempDir(), BlobStore{Root: t.TempDir()}
			writeTree(t, src, map[string]string{"data/x.csv": "1,2\n", "a": "a"})
			m := build(t, src, Options{})
			must(t, tt.mutate(src))
			err := store.Ingest(context.Background(), src, m)
			if !errors.Is(err, ErrSourceChanged) || !strings.Contains(err.Error(), "data/x.csv") {
				t.Fatalf("err = %v, want ErrSourceChanged naming data/x.csv", err)
			}
			if store.Has(mustLookup(t, m, "data/x.csv").SHA256) {
				t.Fatal("stale content stored")
			}
			if ents, _ := os.ReadDir(filepath.Join(store.Root, "tmp")); len(ents) != 0 {
				t.Fatalf("temp files left: %v", ents)
			}
		})
	}
}

func TestMaterializeRejectsBadManifests(t *testing.T) {
	store := BlobStore{Root: t.TempDir()}
	blob := func(content string) Entry {
		src := t.TempDir()
		writeTree(t, src, map[string]string{"f": content})
		m := build(t, src, Options{})
		must(t, store.Ingest(context.Background(), src, m))
		return m.Entries[0]
	}
	good := blob("hello")
	file := func(p string) Entry { e := good; e.Path = p; return e }
	link := func(p, target string) Entry {
		m := newManifest([]Entry{{Path: p, Mode: ModeSymlink, LinkTarget: target}})
		e := m.Entries[0]
		e.SHA256 = sha256Hex(target)
		return e
	}
	tests := []struct {
		name    string
		entries []Entry
		want    string
	}{
		{"ok", []Entry{file("a/b"), link("l", "a/b")}, ""},
		{"dotdot path", []Entry{file("../evil")}, `contains ".."`},
		{"absolute path", []Entry{file("/etc/evil")}, "absolute"},
		{"empty path", []Entry{file("")}, "empty"},
		{"duplicate", []Entry{file("a"), file("./a")}, "twice"},
		{"file under link", []Entry{link("d", "x"), file("d/f")}, "under the non-directory"},
		{"file under file", []Entry{file("d"), file("d/f")}, "under the non-directory"},
		{"absolute link", []Entry{link("l", "/etc")}, "leaves the source directory"},
		{"escaping link", []Entry{link("a/l", "../../x")}, "leaves the source directory"},
		{"escaping through another link", []Entry{link("d", "."), link("l", "d/../x")}, "leaves the source directory"},
		{"bad sha", []Entry{{Path: "f", Mode: 0o644, SHA256: "../../../etc/passwd"}}, "invalid sha256"},
		{"link sha mismatch", []Entry{{Path: "l", Mode: ModeSymlink, LinkTarget: "x", SHA256: good.SHA256}}, "does not match"},
		{"odd mode", []Entry{{Path: "f", Mode: 0o4755, SHA256: good.SHA256}}, "unsupported mode"},
		{"missing blob", []Entry{{Path: "f", Mode: 0o644, SHA256: strings.Repeat("0", 64)}}, "missing from the store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := t.TempDir()
			err := store.Materialize(context.Background(), &Manifest{Entries: tt.entries}, dest)
			if tt.want == "" {
				must(t, err)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if _, serr := os.Stat(filepath.Join(filepath.Dir(dest), "x")); serr == nil {
				t.Fatal("something was written outside dest")
			}
		})
	}
}

func TestSanitizeRelPath(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"a/b.txt", "a/b.txt", true},
		{"./a//b/", "a/b", true},
		{"a/./b", "a/b", true},
		{"...", "...", true},
		{"a..b/c", "a..b/c", true},
		{"", "", false},
		{".", "", false},
		{"./", "", false},
		{"..", "", false},
		{"../x", "", false},
		{"a/../b", "", false},
		{"a/..", "", false},
		{`a\..\b`, "", false},
		{"/etc/passwd", "", false},
		{`\\server\share`, "", false},
		{"a\x00b", "", false},
	}
	for _, tt := range tests {
		got, err := SanitizeRelPath(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("SanitizeRelPath(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestBlobStorePath(t *testing.T) {
	b := BlobStore{Root: "/store"}
	sha := strings.Repeat("ab", 32)
	if got, want := b.Path(sha), filepath.Join("/store", "sha256", "ab", strings.Repeat("ab", 31)); got != want {
		t.Fatalf("Path = %q, want %q", got, want)
	}
	for _, bad := range []string{"", "ab", strings.Repeat("AB", 32), "../" + sha[3:]} {
		if b.Path(bad) != "" || b.Has(bad) {
			t.Errorf("Path(%q) accepted", bad)
		}
	}
}

func TestDiffAndManifestBlob(t *testing.T) {
	e := func(p, sha string, mode uint32) Entry { return Entry{Path: p, SHA256: sha, Mode: mode} }
	old := newManifest([]Entry{e("a.py", "1", 0o644), e("b.py", "2", 0o644), e("c.py", "3", 0o644), e("run.sh", "4", 0o644)})
	cur := newManifest([]Entry{e("a.py", "1", 0o644), e("b.py", "9", 0o644), e("d.py", "5", 0o644), e("run.sh", "4", 0o755)})
	got := Diff(old, cur)
	want := []Change{{"b.py", "changed"}, {"c.py", "removed"}, {"d.py", "added"}, {"run.sh", "changed"}}
	if !slices.Equal(got, want) {
		t.Errorf("Diff = %v, want %v", got, want)
	}
	if d := Diff(old, old); len(d) != 0 {
		t.Errorf("Diff of the same = %v", d)
	}
	b := BlobStore{Root: t.TempDir()}
	sha, err := b.PutManifest(cur)
	if err != nil {
		t.Fatal(err)
	}
	back, err := b.GetManifest(sha)
	if err != nil || back.Hash != cur.Hash || len(back.Entries) != 4 {
		t.Fatalf("GetManifest = %+v, %v", back, err)
	}
}
