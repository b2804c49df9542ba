package hostagent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

type entry struct {
	name, body, link string
	typ              byte
}

func archive(t *testing.T, entries ...entry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: typ, Linkname: e.link}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

func TestPackUnpackRoundTrip(t *testing.T) {
	run := t.TempDir()
	for p, body := range map[string]string{"outputs/model.txt": "w", "outputs/sub/x.bin": "xx", "logs/std_log.txt": "log\n", "secret.txt": "not sent"} {
		if err := os.MkdirAll(filepath.Join(run, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(run, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(run, "outputs", "link")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Pack(run, &buf); err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	if err := Unpack(&buf, dest, 1<<20); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"outputs/model.txt": "w", "outputs/sub/x.bin": "xx", "logs/std_log.txt": "log\n"} {
		if b, err := os.ReadFile(filepath.Join(dest, p)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v", p, b, err)
		}
	}
	for _, p := range []string{"secret.txt", "outputs/link"} {
		if _, err := os.Lstat(filepath.Join(dest, p)); err == nil {
			t.Errorf("%s came back; only outputs/ and logs/ files should", p)
		}
	}
}

// A hostile host answers the collect with an archive that tries to escape.
func TestUnpackRefusesHostileArchives(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []entry
		want    string
	}{
		{"parent traversal", []entry{{name: "outputs/../../evil", body: "x"}}, "refused"},
		{"absolute path", []entry{{name: "/tmp/evil", body: "x"}}, "refused"},
		{"outside outputs and logs", []entry{{name: ".aml/spec.json", body: "x"}}, "only outputs/ and logs/"},
		{"symlink entry", []entry{{name: "outputs/l", link: "/etc", typ: tar.TypeSymlink}}, "not a file or directory"},
		{"hard link entry", []entry{{name: "outputs/h", link: "/etc/passwd", typ: tar.TypeLink}}, "not a file or directory"},
		{"device", []entry{{name: "outputs/dev", typ: tar.TypeChar}}, "not a file or directory"},
		{"too large", []entry{{name: "outputs/big", body: strings.Repeat("x", 2048)}}, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := t.TempDir()
			err := Unpack(archive(t, tc.entries...), dest, 1024)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(dest), "evil")); err == nil {
				t.Fatal("a file was written outside the destination")
			}
		})
	}
	t.Run("write through an existing symlink", func(t *testing.T) {
		dest := t.TempDir()
		outside := t.TempDir()
		if err := os.Symlink(outside, filepath.Join(dest, "outputs")); err != nil {
			t.Fatal(err)
		}
		err := Unpack(archive(t, entry{name: "outputs/x", body: "x"}), dest, 1024)
		if err == nil || !strings.Contains(err.Error(), "symlink") {
			t.Fatalf("got %v, want a refusal", err)
		}
		if _, err := os.Stat(filepath.Join(outside, "x")); err == nil {
			t.Fatal("wrote through the symlink")
		}
	})
}

func TestReceiveBlobsVerifiesContent(t *testing.T) {
	store := snapshot.BlobStore{Root: t.TempDir()}
	sum := sha256.Sum256([]byte("hello"))
	good := hex.EncodeToString(sum[:])
	n, err := ReceiveBlobs(store, archive(t, entry{name: good, body: "hello"}))
	if err != nil || n != 1 || !store.Has(good) {
		t.Fatalf("good blob: n=%d err=%v", n, err)
	}
	other := hex.EncodeToString(make([]byte, 32))
	if _, err := ReceiveBlobs(store, archive(t, entry{name: other, body: "not zeros"})); err == nil {
		t.Fatal("a blob whose content does not match its name was accepted")
	}
	if store.Has(other) {
		t.Fatal("the mismatching blob was stored")
	}
	if _, err := ReceiveBlobs(store, archive(t, entry{name: "../escape", body: "x"})); err == nil {
		t.Fatal("a blob with a path for a name was accepted")
	}
	// Round trip through SendBlobs.
	var buf bytes.Buffer
	if err := SendBlobs(store, []string{good}, &buf); err != nil {
		t.Fatal(err)
	}
	dst := snapshot.BlobStore{Root: t.TempDir()}
	if n, err := ReceiveBlobs(dst, &buf); err != nil || n != 1 || !dst.Has(good) {
		t.Fatalf("send/receive: n=%d err=%v", n, err)
	}
}

func TestMainUsageAndFieldErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main([]string{"bogus"}, strings.NewReader(""), &out, &errOut); code != ExitUsage || !strings.Contains(errOut.String(), "unknown command") {
		t.Fatalf("bogus command: code %d, stderr %q", code, errOut.String())
	}
	out.Reset()
	in := `{"python":{"user_managed_dependencies":true,"interpreter_path":"/nonexistent/python"}}`
	if code := Main([]string{"prepare-env"}, strings.NewReader(in), &out, &errOut); code != ExitFieldError || !strings.Contains(out.String(), "interpreter_path") {
		t.Fatalf("prepare-env with a missing interpreter: code %d, stdout %q", code, out.String())
	}
}
