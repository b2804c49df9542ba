package hostagent

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testManifest is a manifest of n files, with their blobs in store when it is
// not nil.
func testManifest(t *testing.T, n int, store *snapshot.BlobStore) *snapshot.Manifest {
	t.Helper()
	src := t.TempDir()
	for i := 0; i < n; i++ {
		p := filepath.Join(src, fmt.Sprintf("d%d", i%3), fmt.Sprintf("f%03d.txt", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(fmt.Sprintf("file %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := snapshot.Build(t.Context(), src, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if store != nil {
		if err := store.Ingest(t.Context(), src, m); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func TestEncodeInputGzipsLargeRequestsOnly(t *testing.T) {
	small := map[string]string{"a": "b"}
	b, err := EncodeInput(small)
	if err != nil || bytes.HasPrefix(b, gzipMagic) || !json.Valid(b) {
		t.Fatalf("small request: %q, %v; want plain JSON", b, err)
	}
	m := testManifest(t, 100, nil)
	plain, _ := json.Marshal(m)
	b, err = EncodeInput(m)
	if err != nil || !bytes.HasPrefix(b, gzipMagic) {
		t.Fatalf("large request: not gzipped (%d bytes), %v", len(b), err)
	}
	if len(b) >= len(plain)/2 {
		t.Errorf("gzipped manifest is %d bytes, plain %d: want at most half", len(b), len(plain))
	}
	// Both forms read back the same.
	for name, in := range map[string][]byte{"plain": plain, "gzip": b} {
		var got snapshot.Manifest
		if err := decodeInput(bytes.NewReader(in), &got); err != nil || got.Hash != m.Hash || len(got.Entries) != 100 {
			t.Errorf("%s: decoded %d entries, hash %q, %v", name, len(got.Entries), got.Hash, err)
		}
		raw, err := readInput(bytes.NewReader(in), 0)
		if err != nil || !bytes.Equal(raw, plain) {
			t.Errorf("%s: readInput gave %d bytes, %v; want the plain JSON", name, len(raw), err)
		}
	}
	// The limit applies after decompression.
	if raw, err := readInput(bytes.NewReader(b), 10); err != nil || len(raw) != 10 {
		t.Errorf("limited read: %d bytes, %v", len(raw), err)
	}
	if _, err := readInput(bytes.NewReader(append(append([]byte{}, gzipMagic...), "garbage"...)), 0); err == nil {
		t.Error("a corrupt gzip stream was accepted")
	}
	if raw, err := readInput(strings.NewReader(""), 0); err != nil || len(raw) != 0 {
		t.Errorf("empty input: %q, %v", raw, err)
	}
}

func TestMainAcceptsGzippedJSON(t *testing.T) {
	var out, errOut bytes.Buffer
	in := gz(t, []byte(`{"python":{"user_managed_dependencies":true,"interpreter_path":"/nonexistent/python"}}`))
	if code := Main([]string{"prepare-env"}, bytes.NewReader(in), &out, &errOut); code != ExitFieldError || !strings.Contains(out.String(), "interpreter_path") {
		t.Fatalf("gzipped prepare-env: code %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}

// blobs-missing reads the manifest (gzipped or not) and, given a second
// argument, keeps it there for start.
func TestBlobsMissingSavesTheManifest(t *testing.T) {
	hostBlobs := snapshot.BlobStore{Root: t.TempDir()}
	m := testManifest(t, 30, &hostBlobs)
	plain, _ := json.Marshal(m)
	// One blob is missing on the host.
	missingSHA := m.Entries[7].SHA256
	if err := os.Remove(hostBlobs.Path(missingSHA)); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "manifests")
	for name, in := range map[string][]byte{"plain": plain, "gzip": gz(t, plain)} {
		t.Run(name, func(t *testing.T) {
			saved := filepath.Join(dir, name+".json")
			var out, errOut bytes.Buffer
			if code := Main([]string{"blobs-missing", hostBlobs.Root, saved}, bytes.NewReader(in), &out, &errOut); code != 0 {
				t.Fatalf("code %d, stderr %q", code, errOut.String())
			}
			var missing []string
			if err := json.Unmarshal(out.Bytes(), &missing); err != nil || len(missing) != 1 || missing[0] != missingSHA {
				t.Fatalf("missing = %v (%v), want [%s]", missing, err, missingSHA)
			}
			got, err := LoadManifest(saved)
			if err != nil || got.Hash != m.Hash || len(got.Entries) != len(m.Entries) {
				t.Fatalf("saved manifest: %+v, %v", got, err)
			}
			if b, err := os.ReadFile(saved); err != nil || !bytes.Equal(b, in) {
				t.Fatalf("saved manifest is not kept as it came (%d bytes, %d sent): %v", len(b), len(in), err)
			}
		})
	}
	// Without the second argument nothing is saved (the old form).
	var out, errOut bytes.Buffer
	other := t.TempDir()
	if code := Main([]string{"blobs-missing", other}, bytes.NewReader(plain), &out, &errOut); code != 0 {
		t.Fatalf("without a manifest file: code %d, stderr %q", code, errOut.String())
	}
	if code := Main([]string{"blobs-missing", other, "x", "y"}, bytes.NewReader(plain), &out, &errOut); code != ExitUsage {
		t.Fatalf("three arguments: code %d, want %d", code, ExitUsage)
	}
	// No temporary files are left beside the saved manifests.
	des, _ := os.ReadDir(dir)
	if len(des) != 2 {
		t.Fatalf("manifests dir holds %d files, want 2", len(des))
	}
}

func TestSaveManifestPrunesStaleFiles(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "old_run.json")
	fresh := filepath.Join(dir, "recent_run.json")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * manifestMaxAge)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "new_run.json")
	if err := SaveManifest(p, []byte(`{"Hash":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("a manifest older than a day was kept")
	}
	for _, q := range []string{fresh, p} {
		if _, err := os.Stat(q); err != nil {
			t.Errorf("%s: %v", q, err)
		}
	}
	// Overwriting is atomic and leaves nothing else.
	if err := SaveManifest(p, []byte(`{"Hash":"y"}`)); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != `{"Hash":"y"}` {
		t.Errorf("after overwrite: %q", b)
	}
	if des, _ := os.ReadDir(dir); len(des) != 2 {
		t.Errorf("dir holds %d entries, want 2", len(des))
	}
}

func TestDecodeStart(t *testing.T) {
	m := testManifest(t, 5, nil)
	plain, _ := json.Marshal(m)
	saved := filepath.Join(t.TempDir(), "run1.json")
	if err := SaveManifest(saved, plain); err != nil {
		t.Fatal(err)
	}
	stage := hostrun.StageRequest{RunID: "run1", RunDir: "/r/run1", BlobsRoot: "/r/blobs", Program: drivers.Program{Command: []string{"python3", "x.py"}}, GraceSec: 5}

	t.Run("wrapper with a manifest file", func(t *testing.T) {
		raw, _ := json.Marshal(StartRequest{Stage: &stage, ManifestFile: saved})
		if bytes.Contains(raw, []byte(`"Entries"`)) {
			t.Fatalf("the request carries the manifest: %s", raw)
		}
		req, file, err := DecodeStart(raw)
		if err != nil || file != saved || req.Manifest == nil || req.Manifest.Hash != m.Hash || req.RunDir != stage.RunDir || req.Program.Command[1] != "x.py" {
			t.Fatalf("got %+v, %q, %v", req, file, err)
		}
	})
	t.Run("wrapper with an inline manifest", func(t *testing.T) {
		s := stage
		s.Manifest = m
		raw, _ := json.Marshal(StartRequest{Stage: &s})
		req, file, err := DecodeStart(raw)
		if err != nil || file != "" || req.Manifest.Hash != m.Hash {
			t.Fatalf("got %+v, %q, %v", req, file, err)
		}
	})
	t.Run("bare stage request", func(t *testing.T) {
		s := stage
		s.Manifest = m
		raw, _ := json.Marshal(s)
		req, file, err := DecodeStart(raw)
		if err != nil || file != "" || req.Manifest.Hash != m.Hash || req.RunID != "run1" {
			t.Fatalf("got %+v, %q, %v", req, file, err)
		}
	})
	for _, tc := range []struct {
		name string
		req  any
		want string
	}{
		{"no manifest", StartRequest{Stage: &stage}, "no manifest"},
		{"bare without manifest", stage, "no manifest"},
		{"both", StartRequest{Stage: &hostrun.StageRequest{Manifest: m}, ManifestFile: saved}, "both"},
		{"manifest file gone", StartRequest{Stage: &stage, ManifestFile: saved + ".gone"}, "manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, _ := json.Marshal(tc.req)
			if _, _, err := DecodeStart(raw); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// start removes the manifest file it was given, even when staging fails.
func TestStartRemovesTheManifestFile(t *testing.T) {
	m := testManifest(t, 3, nil)
	plain, _ := json.Marshal(m)
	saved := filepath.Join(t.TempDir(), "run1.json")
	if err := SaveManifest(saved, plain); err != nil {
		t.Fatal(err)
	}
	// The run directory exists already: Stage refuses before launching anything.
	runDir := t.TempDir()
	in, _ := EncodeInput(StartRequest{Stage: &hostrun.StageRequest{RunID: "run1", RunDir: runDir, BlobsRoot: t.TempDir()}, ManifestFile: saved})
	var out, errOut bytes.Buffer
	if code := Main([]string{"start"}, bytes.NewReader(in), &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "already exists") {
		t.Fatalf("code %d, stderr %q; want the run directory refusal", code, errOut.String())
	}
	if _, err := os.Stat(saved); err == nil {
		t.Fatal("the manifest file was left behind")
	}
}

// push reads its request, answers which blobs the host lacks, receives them
// from the same stdin, verified, and stages the run.
func TestPushStagesInOneSession(t *testing.T) {
	engineBlobs := snapshot.BlobStore{Root: t.TempDir()}
	m := testManifest(t, 12, &engineBlobs)
	// The host has all but two of them.
	allButTwo := func() snapshot.BlobStore {
		h := snapshot.BlobStore{Root: t.TempDir()}
		for i, e := range m.Entries {
			if i == 3 || i == 8 {
				continue
			}
			f, err := os.Open(engineBlobs.Path(e.SHA256))
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Put(e.SHA256, f); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		return h
	}
	hostBlobs := allButTwo()
	runDir := filepath.Join(t.TempDir(), "runs", "run1")
	req := hostrun.StageRequest{RunID: "run1", RunDir: runDir, Manifest: m, Launch: env.Launch{Interpreter: "python3"}, Program: drivers.Program{Script: "d0/f000.txt"}}
	head, err := EncodeInput(StartRequest{Stage: &req})
	if err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(t.TempDir(), "manifests", "run1.manifest")
	request := func(blobs []string, confirm bool) *bytes.Buffer {
		var in bytes.Buffer
		fmt.Fprintf(&in, "%d\n", len(head))
		in.Write(head)
		if blobs != nil {
			if err := SendBlobs(engineBlobs, blobs, &in); err != nil {
				t.Fatal(err)
			}
		}
		if confirm {
			in.WriteString(PushGo + "\n")
		}
		return &in
	}
	want := []string{m.Entries[3].SHA256, m.Entries[8].SHA256}
	slices.Sort(want)

	// Without the blobs: refused, nothing staged.
	var out, errOut bytes.Buffer
	in := request([]string{}, true)
	if code := Main([]string{"push", "stage", hostBlobs.Root, saved}, in, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "0 of 2 missing") {
		t.Fatalf("without the blobs: code %d, stderr %q", code, errOut.String())
	}
	if _, err := os.Stat(runDir); err == nil {
		t.Fatal("a run directory was staged without its blobs")
	}

	// With the blobs but without the engine's go-ahead: nothing staged, on a
	// host that has none of them (which writes the run directory as they
	// arrive) as on this one.
	for _, h := range []snapshot.BlobStore{{Root: t.TempDir()}, allButTwo()} {
		out.Reset()
		errOut.Reset()
		lacks := h.Missing(m)
		if code := Main([]string{"push", "stage", h.Root, saved}, request(lacks, false), &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "not confirmed") {
			t.Fatalf("without the go line: code %d, stderr %q", code, errOut.String())
		}
		if _, err := os.Stat(runDir); err == nil {
			t.Fatal("a run directory was staged without the engine's go-ahead")
		}
	}
	if _, err := os.Stat(saved); err == nil {
		t.Fatal("the manifest file was left behind")
	}

	out.Reset()
	errOut.Reset()
	if code := Main([]string{"push", "stage", hostBlobs.Root, saved}, request(want, true), &out, &errOut); code != 0 {
		t.Fatalf("code %d, stderr %q", code, errOut.String())
	}
	first, rest, _ := strings.Cut(out.String(), "\n")
	var reply PushReply
	if err := json.Unmarshal([]byte(first), &reply); err != nil || !slices.Equal(reply.Missing, want) {
		t.Fatalf("reply %q (%v), want missing %v", first, err, want)
	}
	if strings.TrimSpace(rest) != "{}" {
		t.Fatalf("after the reply: %q, want {}", rest)
	}
	if b, err := os.ReadFile(filepath.Join(runDir, "d2", "f008.txt")); err != nil || string(b) != "file 8\n" {
		t.Fatalf("staged file: %q, %v", b, err)
	}
	for _, sha := range want {
		if !hostBlobs.Has(sha) {
			t.Fatalf("blob %s not stored on the host", sha)
		}
	}
	if _, err := os.Stat(saved); err == nil {
		t.Fatal("the manifest file was left behind")
	}

	// A length that is not one is a usage error.
	if code := Main([]string{"push", "stage", hostBlobs.Root, saved}, strings.NewReader("x\n{}"), &out, &errOut); code != ExitUsage {
		t.Fatalf("bad length: code %d", code)
	}
}

// A first push (the host has none of the blobs) sends them from the source
// directory, verified, and the host writes the run directory from the same
// bytes as it stores them: every file its own copy, never the blob's inode.
func TestPushFirstSnapshotFromSource(t *testing.T) {
	src := t.TempDir()
	files := map[string]string{"train.py": "print(1)\n", "a/x.txt": "same\n", "a/b/y.txt": "same\n", "empty": "", "run.sh": "#!/bin/sh\n"}
	for p, body := range files {
		mode := os.FileMode(0o644)
		if p == "run.sh" {
			mode = 0o755
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("a/x.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	m, err := snapshot.Build(t.Context(), src, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hostBlobs := snapshot.BlobStore{Root: t.TempDir()}
	runDir := filepath.Join(t.TempDir(), "runs", "run1")
	req := hostrun.StageRequest{RunID: "run1", RunDir: runDir, Manifest: m, Launch: env.Launch{Interpreter: "python3"}, Program: drivers.Program{Script: "train.py"}}
	head, err := EncodeInput(StartRequest{Stage: &req})
	if err != nil {
		t.Fatal(err)
	}
	missing := hostBlobs.Missing(m)
	var in bytes.Buffer
	fmt.Fprintf(&in, "%d\n", len(head))
	in.Write(head)
	if err := SendSourceBlobs(src, m, missing, &in); err != nil {
		t.Fatal(err)
	}
	in.WriteString(PushGo + "\n")
	saved := filepath.Join(t.TempDir(), "run1.manifest")
	var out, errOut bytes.Buffer
	if code := Main([]string{"push", "stage", hostBlobs.Root, saved}, &in, &out, &errOut); code != 0 {
		t.Fatalf("code %d, stderr %q", code, errOut.String())
	}
	for p, body := range files {
		got, err := os.ReadFile(filepath.Join(runDir, p))
		if err != nil || string(got) != body {
			t.Fatalf("%s: %q, %v; want %q", p, got, err, body)
		}
		st, _ := os.Lstat(filepath.Join(runDir, p))
		if want := os.FileMode(0o644); p != "run.sh" && st.Mode() != want || p == "run.sh" && st.Mode() != 0o755 {
			t.Fatalf("%s: mode %v", p, st.Mode())
		}
	}
	if l, err := os.Readlink(filepath.Join(runDir, "link")); err != nil || l != "a/x.txt" {
		t.Fatalf("link: %q, %v", l, err)
	}
	for _, e := range m.Entries {
		if e.Mode == snapshot.ModeSymlink {
			continue
		}
		if !hostBlobs.Has(e.SHA256) {
			t.Fatalf("blob of %s not stored", e.Path)
		}
		bst, _ := os.Stat(hostBlobs.Path(e.SHA256))
		fst, _ := os.Stat(filepath.Join(runDir, e.Path))
		if os.SameFile(bst, fst) {
			t.Fatalf("%s shares its inode with the blob", e.Path)
		}
	}
	// A script rewriting its own file changes its copy only.
	if err := os.WriteFile(filepath.Join(runDir, "a/x.txt"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	e, _ := m.Lookup("a/x.txt")
	if b, _ := os.ReadFile(hostBlobs.Path(e.SHA256)); string(b) != "same\n" {
		t.Fatalf("the blob changed with the run's file: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(runDir, "a/b/y.txt")); string(b) != "same\n" {
		t.Fatalf("a/b/y.txt changed with a/x.txt: %q", b)
	}

	// A source file that changed since the manifest is refused as it is read.
	if err := os.WriteFile(filepath.Join(src, "train.py"), []byte("print(2)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e, _ = m.Lookup("train.py")
	err = SendSourceBlobs(src, m, []string{e.SHA256}, io.Discard)
	if !errors.Is(err, snapshot.ErrSourceChanged) || !strings.Contains(err.Error(), "train.py") {
		t.Fatalf("changed source: %v, want ErrSourceChanged naming train.py", err)
	}
}

// With a spool, received blobs are appended to one file, not stored one by
// one; settling the spool stores them (verified) and removes it.
func TestReceiveBlobsToSpool(t *testing.T) {
	engineBlobs := snapshot.BlobStore{Root: t.TempDir()}
	m := testManifest(t, 6, &engineBlobs)
	host := snapshot.BlobStore{Root: t.TempDir()}
	missing := host.Missing(m)
	var in bytes.Buffer
	if err := SendBlobs(engineBlobs, missing, &in); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(host.Root, "spool"), 0o755); err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(host.Root, "spool", "run1-x.tar")
	f, err := os.Create(spool)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := host.NewTree(m, filepath.Join(t.TempDir(), "run1"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := ReceiveBlobsTo(host, bufio.NewReader(&in), tree, f)
	f.Close()
	if err != nil || n != len(missing) {
		t.Fatalf("received %d of %d: %v", n, len(missing), err)
	}
	if got := host.Missing(m); len(got) != len(missing) {
		t.Fatalf("%d blobs stored before the spool was settled", len(missing)-len(got))
	}
	if err := tree.Finish(t.Context()); err != nil {
		t.Fatal(err)
	}
	settleSpools(host, "run2-") // another run's: left alone
	if _, err := os.Stat(spool); err != nil {
		t.Fatalf("another run's settle touched the spool: %v", err)
	}
	settleSpools(host, "run1-")
	if got := host.Missing(m); len(got) != 0 {
		t.Fatalf("%d blobs missing after the spool was settled", len(got))
	}
	if _, err := os.Stat(spool); err == nil {
		t.Fatal("the spool was left behind")
	}
	// One still being written (another push's) is never touched.
	part := filepath.Join(host.Root, "spool", "run3-y.tar.part")
	if err := os.WriteFile(part, []byte("half a tar"), 0o644); err != nil {
		t.Fatal(err)
	}
	settleSpools(host, "")
	if _, err := os.Stat(part); err != nil {
		t.Fatalf("a spool being written was settled: %v", err)
	}
}
