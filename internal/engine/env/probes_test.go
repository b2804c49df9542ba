package env

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakePython writes dir/python3, a script that answers the probe as Python
// version with exe as sys.executable and appends a line to dir/calls per start.
func fakePython(t *testing.T, dir, version, exe string) string {
	t.Helper()
	path := filepath.Join(dir, "python3")
	script := fmt.Sprintf("#!/bin/sh\necho x >> %q\necho %s\necho cpython-fake\necho %s\n", filepath.Join(dir, "calls"), version, exe)
	// Write beside and rename, as an upgrade does: a new inode.
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func calls(t *testing.T, dir string) int {
	b, _ := os.ReadFile(filepath.Join(dir, "calls"))
	return strings.Count(string(b), "x")
}

func forgetProbes() {
	memMu.Lock()
	memProbes = map[string]probeEntry{}
	memMu.Unlock()
}

// The probe of an unchanged interpreter is answered from memory, then (as in a
// new process) from the cache's probe file; a changed interpreter, or a changed
// binary behind it, is probed again; a removed one is an error.
func TestProbeKeptUntilInterpreterChanges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bin, root := t.TempDir(), t.TempDir()
	exe := filepath.Join(t.TempDir(), "python3.11")
	if err := os.WriteFile(exe, []byte("binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	fakePython(t, bin, "3.11.7", exe)
	forgetProbes()
	t.Cleanup(forgetProbes)

	find := func(wantCalls int, wantVersion string) {
		t.Helper()
		pr := newProber(root)
		in, err := findInterpreter(ctx, "", bin, pr)
		pr.save()
		if err != nil {
			t.Fatal(err)
		}
		if in.Version != wantVersion || in.ABI != "cpython-fake" || in.Path != filepath.Join(bin, "python3") {
			t.Errorf("interpreter = %+v, want version %s", in, wantVersion)
		}
		if got := calls(t, bin); got != wantCalls {
			t.Errorf("interpreter started %d times in all, want %d", got, wantCalls)
		}
	}
	find(1, "3.11.7")
	find(1, "3.11.7") // memory
	forgetProbes()
	find(1, "3.11.7") // the probe file, as a new process sees it
	if _, err := os.Stat(filepath.Join(root, probesFile)); err != nil {
		t.Fatal(err)
	}

	fakePython(t, bin, "3.12.1", exe) // upgraded in place
	find(2, "3.12.1")
	find(2, "3.12.1")

	// The binary behind it (sys.executable) changed; the path did not.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(exe, []byte("another binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	find(3, "3.12.1")
	forgetProbes()
	find(3, "3.12.1")

	if err := os.Remove(filepath.Join(bin, "python3")); err != nil {
		t.Fatal(err)
	}
	if _, err := findInterpreter(ctx, "", bin, newProber(root)); err == nil || !strings.Contains(err.Error(), "no interpreter") {
		t.Errorf("removed interpreter: err = %v, want no interpreter found", err)
	}
}

// A shim's answer also depends on the version manager's inputs.
func TestProbeShimFollowsVersionFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bin, root, home := t.TempDir(), t.TempDir(), t.TempDir()
	t.Setenv("PYENV_ROOT", home)
	fakePython(t, bin, "3.11.7", "")
	forgetProbes()
	t.Cleanup(forgetProbes)
	probe := func() {
		t.Helper()
		if _, err := findInterpreter(ctx, "", bin, newProber(root)); err != nil {
			t.Fatal(err)
		}
	}
	probe()
	probe()
	if got := calls(t, bin); got != 1 {
		t.Fatalf("started %d times, want 1", got)
	}
	if err := os.WriteFile(filepath.Join(home, "version"), []byte("3.12.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	probe()
	t.Setenv("PYENV_VERSION", "3.10.0")
	probe()
	probe()
	if got := calls(t, bin); got != 3 {
		t.Errorf("started %d times, want 3 (global version file, PYENV_VERSION)", got)
	}
}
