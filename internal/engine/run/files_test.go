package run

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A script can leave anything where the engine reads: each of these must be
// refused at once, never waited on or read without end.
func TestOpenRunFileRefusesHostileFiles(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret.txt")
	if err := os.WriteFile(outside, []byte("not yours\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"urandom": "/dev/urandom", "escape": outside, "dir": root} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "ok.txt"), []byte("fine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("ok.txt", filepath.Join(root, "inside-link")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"fifo", "urandom", "escape", "dir", "../" + filepath.Base(root)} {
		t.Run(name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				f, err := OpenRunFile(root, filepath.Join(root, name))
				if f != nil {
					f.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, ErrNotRegular) {
					t.Fatalf("got %v, want ErrNotRegular", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("OpenRunFile blocked")
			}
		})
	}
	b, err := ReadRunFile(root, filepath.Join(root, "inside-link"), 100)
	if err != nil || string(b) != "fine\n" {
		t.Fatalf("a link inside the run directory: %q, %v", b, err)
	}
	if _, err := ReadRunFile(root, filepath.Join(root, "ok.txt"), 2); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("over the bound: %v", err)
	}
	if _, err := OpenRunFile(root, filepath.Join(root, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}

// A metrics file that is a FIFO or /dev/urandom is an error at once; one
// oversized line or a null value drops that line only, counted.
func TestReadMetricsFileHostile(t *testing.T) {
	root := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(root, "fifo.jsonl"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/urandom", filepath.Join(root, "random.jsonl")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"fifo.jsonl", "random.jsonl"} {
		if _, _, err := ReadMetricsFile(root, filepath.Join(root, name)); !errors.Is(err, ErrNotRegular) {
			t.Errorf("%s: %v, want ErrNotRegular", name, err)
		}
	}
	body := `{"name":"a","value":1}` + "\n" +
		`{"name":"big","value":2,"pad":"` + strings.Repeat("x", 2*MaxMetricLineBytes) + `"}` + "\n" +
		`{"name":"loss","value":null}` + "\n" +
		`{"name":"nov"}` + "\n" +
		`{"name":"b","value":3}` + "\n"
	p := filepath.Join(root, "m.jsonl")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	ms, dropped, err := ReadMetricsFile(root, p)
	if err != nil || dropped != 3 || len(ms) != 2 || ms[0].Name != "a" || ms[1].Name != "b" || ms[1].Value != 3 {
		t.Fatalf("got %+v, dropped %d, %v; want a and b kept, 3 dropped", ms, dropped, err)
	}
}
