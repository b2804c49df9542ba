package sshhost

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
)

// The driver stages this test binary on the host as the agent, which runs it
// with "agent ...".
func TestMain(m *testing.M) { testutil.Main(m, nil) }

// newDriver starts a real sshd (the host is this machine) and returns a driver
// for it with remote_root in the host user's home.
func newDriver(t *testing.T) (*Driver, *sshd.Server) {
	t.Helper()
	srv := sshd.Start(t, sshd.Options{})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pool := remote.NewPool()
	t.Cleanup(pool.Close)
	return &Driver{
		Pool:          pool,
		Endpoint:      srv.Endpoint(),
		Root:          srv.Home + "/.aml",
		LocalRunsRoot: t.TempDir(),
		Blobs:         snapshot.BlobStore{Root: t.TempDir()},
		AgentPath:     exe,
	}, srv
}

// sessions counts the SSH sessions sshd has started so far (its log is VERBOSE).
func sessions(srv *sshd.Server) int {
	return strings.Count(srv.Log(), "Starting session: command")
}

// sessionsSince waits briefly for sshd's log to settle, then returns how many
// sessions started since `before`.
func sessionsSince(srv *sshd.Server, before int) int {
	n := sessions(srv) - before
	for i := 0; i < 10; i++ {
		time.Sleep(20 * time.Millisecond)
		m := sessions(srv) - before
		if m == n {
			break
		}
		n = m
	}
	return n
}

func (d *Driver) binOnHost(t *testing.T) string {
	t.Helper()
	bin, err := d.agentBin()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// The agent is staged on first use and after it disappears, and a call on a
// host that has it takes one SSH session: no separate check first.
func TestAgentStagedOnDemand(t *testing.T) {
	d, srv := newDriver(t)
	ctx := context.Background()
	if _, err := d.Probe(ctx); err != nil {
		t.Fatalf("probe on a new host: %v\n%s", err, srv.LogTail())
	}
	bin := d.binOnHost(t)
	if st, err := os.Stat(bin); err != nil || st.Mode()&0o111 == 0 {
		t.Fatalf("agent not staged at %s: %v", bin, err)
	}
	if !strings.Contains(srv.Log(), "Starting session: command") {
		t.Skip("sshd's log does not record sessions; cannot count them")
	}

	before := sessions(srv)
	if _, err := d.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	if n := sessionsSince(srv, before); n != 1 {
		t.Fatalf("a probe with the agent in place took %d SSH sessions, want 1", n)
	}

	// remote_root wiped: the call finds no agent, stages it and runs again.
	if err := os.RemoveAll(filepath.Join(d.Root, "bin")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Probe(ctx); err != nil {
		t.Fatalf("probe after the agent was removed: %v\n%s", err, srv.LogTail())
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("agent not staged again: %v", err)
	}

	// Removed again, then several calls at once: one of them stages it.
	if err := os.RemoveAll(filepath.Join(d.Root, "bin")); err != nil {
		t.Fatal(err)
	}
	before = sessions(srv)
	const calls = 4
	var wg sync.WaitGroup
	errs := make([]error, calls)
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = d.Probe(ctx)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent probe %d: %v", i, err)
		}
	}
	// At most: each call twice, plus one staging (test -x, mkdir, two for the
	// upload). Staging once per call would take more.
	if n := sessionsSince(srv, before); n > 2*calls+4 {
		t.Fatalf("%d concurrent probes on a host without the agent took %d sessions, want at most %d", calls, n, 2*calls+4)
	}
}

// Start sends the manifest once, the blobs the host lacks and starts the run
// in one session, and leaves no manifest file behind; the host builds a spare
// tree of the snapshot for the next run.
func TestStartKeepsTheManifestForStart(t *testing.T) {
	d, srv := newDriver(t)
	ctx := context.Background()
	src := t.TempDir()
	for i := 0; i < 50; i++ {
		p := filepath.Join(src, fmt.Sprintf("d%d", i%5), fmt.Sprintf("f%02d.txt", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(fmt.Sprintf("file %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := snapshot.Build(ctx, src, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Blobs.Ingest(ctx, src, m); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Probe(ctx); err != nil { // stages the agent
		t.Fatalf("probe: %v\n%s", err, srv.LogTail())
	}
	before := sessions(srv)
	h, err := d.Start(ctx, drivers.RunSpec{
		RunID:    "exp_1_abcd",
		Manifest: m,
		Blobs:    d.Blobs,
		Program:  drivers.Program{Command: []string{"sh", "-c", "cat d3/f13.txt > outputs/copy.txt"}},
		Grace:    time.Second,
	})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, srv.LogTail())
	}
	if n := sessionsSince(srv, before); n != 1 && strings.Contains(srv.Log(), "Starting session: command") {
		t.Errorf("start took %d SSH sessions, want 1 (push: blobs-missing, blobs-receive and start)", n)
	}
	// The spare tree's builder, in the background, takes the manifest over
	// and removes it once done.
	for i := 0; ; i++ {
		des, err := os.ReadDir(filepath.Join(d.Root, "manifests"))
		if err == nil && len(des) == 0 {
			break
		}
		if i == 200 {
			t.Fatalf("manifests left on the host: %v, %v", des, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if des, err := os.ReadDir(filepath.Join(d.Root, "spares")); err != nil || len(des) != 2 { // the tree and builder.log
		t.Errorf("spares on the host: %v, %v", des, err)
	}
	ex, err := d.Recover(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := ex.Wait(wctx)
	if err != nil || st.Status != run.Completed {
		t.Fatalf("run ended %+v, %v", st, err)
	}
	c, err := ex.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(c.OutputsPath, "copy.txt")); err != nil || string(b) != "file 13\n" {
		t.Fatalf("output: %q, %v", b, err)
	}
}

// Wait learns of the end from the host (agent wait) instead of polling: a run
// of a second takes one session to wait for, not one per poll.
func TestWaitAsksTheHostOnce(t *testing.T) {
	d, srv := newDriver(t)
	ctx := context.Background()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "x.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := snapshot.Build(ctx, src, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Blobs.Ingest(ctx, src, m); err != nil {
		t.Fatal(err)
	}
	h, err := d.Start(ctx, drivers.RunSpec{RunID: "exp_1_wait", Manifest: m, Blobs: d.Blobs,
		Program: drivers.Program{Command: []string{"sh", "-c", "sleep 1"}}, Grace: time.Second})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, srv.LogTail())
	}
	ex, err := d.Recover(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	before := sessions(srv)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	t0 := time.Now()
	st, err := ex.Wait(wctx)
	if err != nil || st.Status != run.Completed {
		t.Fatalf("run ended %+v, %v", st, err)
	}
	if n := sessionsSince(srv, before); n != 1 && strings.Contains(srv.Log(), "Starting session: command") {
		t.Errorf("waiting %v for the run took %d SSH sessions, want 1", time.Since(t0).Round(time.Millisecond), n)
	}
}
