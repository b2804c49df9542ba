// Package testutil holds the helpers the project's tests share: files, polling,
// processes, and the TestMain of test binaries that the engine re-executes as
// its agent.
package testutil

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/agent"
)

// Main is the TestMain of a package whose tests start runs: the engine starts
// supervisors and node agents by re-executing the test binary with "agent".
// setup (optional) runs before the tests and may return a cleanup.
func Main(m *testing.M, setup func() (cleanup func())) {
	agent.MaybeRun()
	var cleanup func()
	if setup != nil {
		cleanup = setup()
	}
	code := m.Run()
	if cleanup != nil {
		cleanup()
	}
	os.Exit(code)
}

// WriteFiles writes files (slash paths relative to dir) and returns dir.
func WriteFiles(t testing.TB, dir string, files map[string]string) string {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// WaitFor polls cond until it holds, failing the test after limit.
func WaitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := Poll(limit, what, func() (bool, error) { return cond(), nil }); err != nil {
		t.Fatal(err)
	}
}

// Poll calls cond until it returns true, an error, or the timeout passes (for
// check functions that return an error instead of failing the test).
func Poll(timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ProcessGone reports whether pid no longer names a live process (a zombie
// nobody has reaped yet counts as gone: it runs nothing).
func ProcessGone(pid int) bool {
	if pid <= 0 {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) != nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] == 'Z' || b[i+2] == 'X'
}
