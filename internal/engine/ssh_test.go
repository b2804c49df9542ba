package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
)

// attach starts a real sshd and attaches it to a fresh workspace as "host",
// with a user-managed python3 run configuration for it.
func attach(t *testing.T, remoteRoot string, options ...func(*engine.Options)) (*testEnv, *sshd.Server) {
	t.Helper()
	srv := sshd.Start(t, sshd.Options{})
	te := setup(t, func(s *engine.RunConfigSpec) {
		s.Environment = env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: "python3"}}
	}, options...)
	_, err := te.e.AttachRemote(context.Background(), te.ws, engine.RemoteSpec{
		Name: "host", Address: "127.0.0.1", Port: srv.Port, Username: srv.User, HostKey: srv.HostKey, RemoteRoot: remoteRoot,
	}, engine.Credentials{PrivateKey: string(srv.KeyPEM)})
	if err != nil {
		t.Fatalf("attach: %v\n%s", err, srv.LogTail())
	}
	return te, srv
}

// countBlobs counts the files in the host's blob store (the host is this machine).
func countBlobs(t *testing.T, root string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(root, "blobs", "sha256"), func(_ string, de fs.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return n
}

// A re-run after changing one file of a large tree sends that one file.
func TestRemoteRunSendsOnlyMissingBlobs(t *testing.T) {
	te, srv := attach(t, "")
	ctx := context.Background()
	files := map[string]string{"train.py": "import aml_run\naml_run.log('files', 200)\nprint('ok')\n"}
	for i := 0; i < 200; i++ {
		files[fmt.Sprintf("data/%02d/f%03d.txt", i%10, i)] = fmt.Sprintf("sample %d\n", i)
	}
	src := writeSource(t, files)
	root := srv.Home + "/.aml"

	req := te.request(src, "train.py")
	req.ComputeTarget = "host"
	first, err := te.e.SubmitRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := te.e.WaitRun(ctx, first.ID); err != nil || r.Metrics["files"] != 200 {
		t.Fatalf("first remote run: %+v, %v", r, err)
	}
	if n := countBlobs(t, root); n != 201 {
		t.Fatalf("host blob store holds %d blobs after the first run, want 201", n)
	}

	if err := os.WriteFile(filepath.Join(src, "data", "03", "f013.txt"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	req.Triggers = map[string]string{"n": "2"}
	second, err := te.e.SubmitRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	r, err := te.e.WaitRun(ctx, second.ID)
	if err != nil || r.Status != run.Completed {
		t.Fatalf("second remote run: %+v, %v", r, err)
	}
	if n := countBlobs(t, root); n != 202 {
		t.Fatalf("host blob store holds %d blobs after a one-file change, want 202 (one sent)", n)
	}
	b, err := os.ReadFile(filepath.Join(root, "runs", second.RunID, "data", "03", "f013.txt"))
	if err != nil || string(b) != "changed\n" {
		t.Fatalf("the changed file did not reach the host's run directory: %q, %v", b, err)
	}
}

// Detaching refuses while a run is active unless forced; forced, it cancels it.
func TestDetachWithActiveRun(t *testing.T) {
	te, srv := attach(t, "")
	ctx := context.Background()
	src := writeSource(t, map[string]string{"train.py": "import time\ntime.sleep(60)\n"})
	req := te.request(src, "train.py")
	req.ComputeTarget = "host"
	r, err := te.e.SubmitRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	id := engine.TargetID(te.ws, "host")
	err = te.e.DetachTarget(ctx, id, false)
	if err == nil || !strings.Contains(err.Error(), "active run") || !strings.Contains(err.Error(), r.RunID) {
		t.Fatalf("detach with an active run: %v, want a refusal naming %s", err, r.RunID)
	}
	if _, err := te.e.ReadTarget(ctx, id); err != nil {
		t.Fatalf("the refused detach removed the target: %v", err)
	}
	if err := te.e.DetachTarget(ctx, id, true); err != nil {
		t.Fatalf("forced detach: %v", err)
	}
	got, err := te.e.ReadRun(ctx, r.ID)
	if err != nil || got.Status != run.Canceled {
		t.Fatalf("run after forced detach: %+v, %v; want Canceled", got, err)
	}
	if _, err := te.e.ReadTarget(ctx, id); !engine.IsNotFound(err) {
		t.Fatalf("target still there after detach: %v", err)
	}
	// Nothing on the host was deleted.
	if _, err := os.Stat(filepath.Join(srv.Home, ".aml", "runs", r.RunID)); err != nil {
		t.Fatalf("detach touched the host's files: %v", err)
	}
}

func TestAttachRemoteRootNotWritable(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	te := setup(t, nil)
	forbidden := filepath.Join(t.TempDir(), "root-only") // 0700 parents owned by root
	_, err := te.e.AttachRemote(context.Background(), te.ws, engine.RemoteSpec{
		Name: "host", Address: "127.0.0.1", Port: srv.Port, Username: srv.User, HostKey: srv.HostKey, RemoteRoot: forbidden,
	}, engine.Credentials{PrivateKey: string(srv.KeyPEM)})
	var fe *engine.FieldError
	if !errors.As(err, &fe) || fe.Attr != "remote_root" || !strings.Contains(err.Error(), forbidden) || !strings.Contains(err.Error(), "Permission denied") {
		t.Fatalf("attach with an unwritable remote_root: %v; want a remote_root error naming %s and saying why (mkdir's Permission denied)", err, forbidden)
	}
	if _, err := te.e.ReadTarget(context.Background(), engine.TargetID(te.ws, "host")); !engine.IsNotFound(err) {
		t.Fatalf("a failed attach recorded the target: %v", err)
	}
}

func TestAttachBadInput(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	te := setup(t, nil)
	ctx := context.Background()
	good := engine.RemoteSpec{Name: "host", Address: "127.0.0.1", Port: srv.Port, Username: srv.User, HostKey: srv.HostKey}
	creds := engine.Credentials{PrivateKey: string(srv.KeyPEM)}
	encrypted := sshd.Start(t, sshd.Options{EncryptedKeyPassphrase: "correct horse"})
	for _, tc := range []struct {
		name   string
		mutate func(*engine.RemoteSpec, *engine.Credentials)
		attr   string
	}{
		{"reserved name", func(s *engine.RemoteSpec, _ *engine.Credentials) { s.Name = "local" }, "name"},
		{"unreachable", func(s *engine.RemoteSpec, _ *engine.Credentials) { s.Port = 1 }, "address"},
		{"wrong user", func(s *engine.RemoteSpec, _ *engine.Credentials) { s.Username = "nobody-here" }, "username"},
		{"wrong password", func(_ *engine.RemoteSpec, c *engine.Credentials) { *c = engine.Credentials{Password: "not-it"} }, "username"},
		{"relative remote_root", func(s *engine.RemoteSpec, _ *engine.Credentials) { s.RemoteRoot = "aml" }, "remote_root"},
		{"encrypted key without passphrase", func(_ *engine.RemoteSpec, c *engine.Credentials) { c.PrivateKey = string(encrypted.KeyPEM) }, "private_key_passphrase"},
		{"wrong passphrase", func(_ *engine.RemoteSpec, c *engine.Credentials) {
			c.PrivateKey, c.Passphrase = string(encrypted.KeyPEM), "not-the-passphrase"
		}, "private_key_passphrase"},
		{"not a key", func(_ *engine.RemoteSpec, c *engine.Credentials) { c.PrivateKey = "-----BEGIN NONSENSE-----" }, "private_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, c := good, creds
			tc.mutate(&spec, &c)
			start := time.Now()
			_, err := te.e.AttachRemote(ctx, te.ws, spec, c)
			var fe *engine.FieldError
			if !errors.As(err, &fe) || fe.Attr != tc.attr {
				t.Fatalf("got %v, want an error on %s", err, tc.attr)
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("took %s: bad input must fail fast", d)
			}
			if c.Password != "" && strings.Contains(err.Error(), c.Password) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

// A host whose login PATH has no python3: the attach says so, naming the PATH.
func TestAttachHostWithoutPython(t *testing.T) {
	bare := t.TempDir()
	for _, tool := range []string{"sh", "uname", "mkdir", "test", "printf", "cat", "chmod", "mv", "rm", "wc", "sha256sum"} {
		if p, err := exec.LookPath(tool); err == nil {
			_ = os.Symlink(p, filepath.Join(bare, tool))
		}
	}
	if err := os.Chmod(bare, 0o755); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parents are 0700: use a directory the host's user can enter.
	dir, err := os.MkdirTemp("", "aml-nopython-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.Rename(bare, bin); err != nil {
		t.Fatal(err)
	}
	srv := sshd.Start(t, sshd.Options{SessionPath: bin})
	te := setup(t, nil)
	_, err = te.e.AttachRemote(context.Background(), te.ws, engine.RemoteSpec{
		Name: "host", Address: "127.0.0.1", Port: srv.Port, Username: srv.User, HostKey: srv.HostKey,
	}, engine.Credentials{PrivateKey: string(srv.KeyPEM)})
	var fe *engine.FieldError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "no python3") || !strings.Contains(err.Error(), bin) {
		t.Fatalf("attach to a host without python3: %v", err)
	}
	if _, err := te.e.ReadTarget(context.Background(), engine.TargetID(te.ws, "host")); !engine.IsNotFound(err) {
		t.Fatalf("the refused attach was recorded: %v", err)
	}
}

// Outputs over the collection limit end the transfer cleanly: the run is
// recorded, the log and what fits come back, and the message says what stayed
// on the host and where.
func TestRemoteCollectLimit(t *testing.T) {
	te, _ := attach(t, "", func(o *engine.Options) { o.CollectMaxBytes = 1 << 20 })
	src := writeSource(t, map[string]string{"train.py": `import os
print("writing outputs")
for i in range(6):
    with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "part%d.bin" % i), "wb") as f:
        f.write(os.urandom(512 * 1024))
`})
	req := te.request(src, "train.py")
	req.ComputeTarget = "host"
	sub := te.submit(t, req)
	r, err := waitRun(t, te.e, sub.ID, 60*time.Second)
	if err != nil || r.Status != run.Completed {
		t.Fatalf("run %+v: %v", r, err)
	}
	if !strings.Contains(r.Message, "larger than the collection limit of 1048576 bytes") || !strings.Contains(r.Message, "the rest is on") {
		t.Errorf("message %q does not say what was left on the host", r.Message)
	}
	if len(r.OutputFiles) == 0 || len(r.OutputFiles) >= 6 {
		t.Errorf("output files %v: want the ones that fit, not all six", r.OutputFiles)
	}
	for _, f := range r.OutputFiles {
		if _, err := os.Stat(filepath.Join(r.OutputsPath, f)); err != nil {
			t.Errorf("listed %s is not on the engine host: %v", f, err)
		}
	}
	if b, err := os.ReadFile(r.LogPath); err != nil || !strings.Contains(string(b), "writing outputs") {
		t.Errorf("the log did not come back first: %q, %v", b, err)
	}
}

// The snapshot is stored in the workspace while it is sent to the host: a run
// is recorded only once both are done, with every blob in the workspace, and a
// source file that changes while it is read records nothing, launches nothing
// and names source_directory.
func TestRemoteSnapshotStoredWhileSent(t *testing.T) {
	te, srv := attach(t, "")
	ctx := context.Background()
	files := map[string]string{"train.py": "print('v1')\n"}
	for i := 0; i < 300; i++ {
		files[fmt.Sprintf("data/%02d/f%03d.txt", i%10, i)] = fmt.Sprintf("sample %d\n", i)
	}
	src := writeSource(t, files)
	root := srv.Home + "/.aml"

	// Changed after the submission was validated, before anything was read.
	restore := engine.SetSubmitHook(func(dir string) {
		if dir == src {
			if err := os.WriteFile(filepath.Join(src, "data", "04", "f014.txt"), []byte("sample 14, changed\n"), 0o644); err != nil {
				t.Error(err)
			}
		}
	})
	req := te.request(src, "train.py")
	req.ComputeTarget = "host"
	_, err := te.e.SubmitRun(ctx, req)
	restore()
	if err == nil || !strings.Contains(err.Error(), "data/04/f014.txt") || !strings.Contains(err.Error(), "run plan again") {
		t.Fatalf("err = %v, want the changed file named", err)
	}
	if fe := fieldErr(t, err); fe.Attr != "source_directory" {
		t.Errorf("Attr = %q", fe.Attr)
	}
	if n := runCount(t, te.e, te.ws); n != 0 {
		t.Errorf("%d runs recorded", n)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "runs")); len(entries) != 0 {
		t.Errorf("the host has run directories: %v", entries)
	}

	// Submitted again (the plan sees the new content): it runs, and the
	// workspace holds every blob of its snapshot.
	r, err := te.e.SubmitRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := te.e.WaitRun(ctx, r.ID)
	if err != nil || got.Status != run.Completed || !strings.Contains(got.LogTail, "v1") {
		t.Fatalf("run: %+v, %v", got, err)
	}
	_, m, err := te.e.PlanSnapshot(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if missing := (snapshot.BlobStore{Root: filepath.Join(te.wsDir, store.BlobsDir)}).Missing(m); len(missing) != 0 {
		t.Fatalf("the workspace's blob store lacks %d blobs of the run's snapshot", len(missing))
	}
	b, err := os.ReadFile(filepath.Join(root, "runs", r.RunID, "data", "04", "f014.txt"))
	if err != nil || string(b) != "sample 14, changed\n" {
		t.Fatalf("the host's run directory: %q, %v", b, err)
	}
}

// A run that an interrupted apply submitted to an SSH host (the snapshot sent
// while it was stored, then recorded, then launched) is adopted by the next
// identical submission, not submitted twice.
func TestRemoteAdoptOrphanedRun(t *testing.T) {
	te, _ := attach(t, "")
	ctx := context.Background()
	files := map[string]string{"slow.py": "import time\ntime.sleep(1)\nimport aml_run\naml_run.log('acc', 0.7)\n"}
	for i := 0; i < 50; i++ {
		files[fmt.Sprintf("data/f%02d.txt", i)] = fmt.Sprintf("sample %d\n", i)
	}
	src := writeSource(t, files)
	req := te.request(src, "slow.py")
	req.ComputeTarget = "host"
	childID := submitInChild(t, te, req)
	adopted, err := te.e.SubmitRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !adopted.Adopted || adopted.ID != childID {
		t.Fatalf("identical submission: adopted=%v id=%s, want the child's %s", adopted.Adopted, adopted.ID, childID)
	}
	if n := runCount(t, te.e, te.ws); n != 1 {
		t.Errorf("runs = %d, want 1", n)
	}
	r, err := te.e.WaitRun(ctx, adopted.ID)
	if err != nil || r.Status != run.Completed || r.Metrics["acc"] != 0.7 {
		t.Fatalf("adopted run: %+v %v", r, err)
	}
}

// A host of another architecture (here a uname that says riscv64) is refused on
// address before anything is written there: no remote_root is created.
func TestAttachForeignArchitecture(t *testing.T) {
	dir, err := os.MkdirTemp("", "aml-foreign-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"sh", "mkdir", "test", "printf", "cat"} {
		if p, err := exec.LookPath(tool); err == nil {
			_ = os.Symlink(p, filepath.Join(bin, tool))
		}
	}
	if err := os.WriteFile(filepath.Join(bin, "uname"), []byte("#!/bin/sh\necho Linux riscv64\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	srv := sshd.Start(t, sshd.Options{SessionPath: bin})
	te := setup(t, nil)
	root := filepath.Join(srv.Home, "aml-foreign")
	_, err = te.e.AttachRemote(context.Background(), te.ws, engine.RemoteSpec{
		Name: "host", Address: "127.0.0.1", Port: srv.Port, Username: srv.User, HostKey: srv.HostKey, RemoteRoot: root,
	}, engine.Credentials{PrivateKey: string(srv.KeyPEM)})
	var fe *engine.FieldError
	if !errors.As(err, &fe) || fe.Attr != "address" || !strings.Contains(err.Error(), "riscv64") {
		t.Fatalf("attach to a riscv64 host: %v; want an address error naming the architecture", err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("the refused attach created remote_root %s on the host: %v", root, err)
	}
}

// Attaching a host whose agent is already staged takes one SSH session (the
// system, $HOME and remote_root checks and the agent's probe), and describes
// the host as the first attach, which staged the agent, did.
func TestAttachStagedHostInOneSession(t *testing.T) {
	te, srv := attach(t, "")
	ctx := context.Background()
	sessions := func() int { return strings.Count(srv.Log(), "Starting session:") }
	before := sessions()
	if _, err := te.e.AttachRemote(ctx, te.ws, engine.RemoteSpec{
		Name: "again", Address: "127.0.0.1", Port: srv.Port, Username: srv.User, HostKey: srv.HostKey,
	}, engine.Credentials{PrivateKey: string(srv.KeyPEM)}); err != nil {
		t.Fatal(err)
	}
	if n := sessions() - before; n != 1 {
		t.Errorf("the second attach took %d SSH sessions, want 1\n%s", n, srv.LogTail())
	}
	first, err := te.e.ReadTarget(ctx, engine.TargetID(te.ws, "host"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := te.e.ReadTarget(ctx, engine.TargetID(te.ws, "again"))
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Facts.PythonVersions) == 0 || !reflect.DeepEqual(first.Facts, again.Facts) {
		t.Errorf("facts of the one-session attach %+v differ from the first attach's %+v", again.Facts, first.Facts)
	}
}
