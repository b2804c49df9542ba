package engine_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
	"github.com/openaml/terraform-provider-aml/internal/engine/store/objstore"
	"github.com/openaml/terraform-provider-aml/internal/testutil/postgres"
	s3test "github.com/openaml/terraform-provider-aml/internal/testutil/s3"
	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
)

const sharedTrain = `import os, aml_run
aml_run.log("accuracy", 0.9)
open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "model.txt"), "w").write("w")
print("trained")
`

// Two engines with their own caches (two machines) on one shared backend: a
// run made on one is read, with its files, on the other.
func TestSharedWorkspaceAcrossMachines(t *testing.T) {
	py := python(t)
	ctx := context.Background()
	pg := postgres.Start(t)
	srv := s3test.Start(t)
	s3cfg := srv.Config(srv.Bucket(t))
	url := pg.NewDB(t)
	backend := func(cache string) func(*engine.Options) {
		return func(o *engine.Options) {
			o.Shared = &engine.SharedBackend{Postgres: url, S3: s3cfg, CacheDir: cache}
		}
	}
	a := newEngine(t, t.TempDir(), backend(t.TempDir()))
	b := newEngine(t, t.TempDir(), backend(t.TempDir()))

	ws, err := a.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "team", Backend: engine.BackendShared})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ws.ID, "/") {
		t.Fatalf("shared workspace id %q looks like a path", ws.ID)
	}
	again, err := b.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "team", Backend: engine.BackendShared})
	if err != nil || again.ID != ws.ID {
		t.Fatalf("the same name on another machine: %+v, %v; want workspace %s", again, err, ws.ID)
	}
	rc, err := a.PutRunConfig(ctx, ws.ID, engine.RunConfigSpec{Name: "rc", Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: py}}})
	if err != nil {
		t.Fatal(err)
	}
	src := writeSource(t, map[string]string{"train.py": sharedTrain})
	r, err := a.SubmitRun(ctx, engine.RunRequest{WorkspaceID: ws.ID, Experiment: "exp", SourceDirectory: src, Script: "train.py", ComputeTarget: engine.LocalTarget, RunConfigID: rc.ID})
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, a, r.ID)
	done, err := waitRun(t, a, r.ID, 60*time.Second)
	if err != nil || done.Status != run.Completed {
		t.Fatalf("run: %+v, %v", done, err)
	}
	if !strings.HasPrefix(done.OutputsURI, "s3://"+s3cfg.Bucket+"/"+ws.ID+"/runs/"+done.RunID+"/outputs/") {
		t.Errorf("outputs_uri = %q", done.OutputsURI)
	}
	obj, err := objstore.NewS3(ctx, s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"runs/" + done.RunID + "/outputs/model.txt", "runs/" + done.RunID + "/logs/std_log.txt"} {
		if _, err := obj.Stat(ctx, ws.ID+"/"+key); err != nil {
			t.Errorf("%s is not in the bucket: %v", key, err)
		}
	}

	// Machine B reads it: record from PostgreSQL, files from the bucket.
	seen, err := b.ReadRun(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if seen.Status != run.Completed || seen.Metrics["accuracy"] != 0.9 || seen.OutputsGone || len(seen.OutputFiles) != 1 {
		t.Fatalf("B sees %+v", seen)
	}
	if seen.OutputsPath == done.OutputsPath {
		t.Errorf("B's outputs_path is A's: %s", seen.OutputsPath)
	}
	if got, err := os.ReadFile(filepath.Join(seen.OutputsPath, "model.txt")); err != nil || string(got) != "w" {
		t.Errorf("B's copy: %q, %v", got, err)
	}

	// Kept with its history by default; deleted with it on DELETE: records,
	// objects and this machine's cache.
	if kept, err := a.DestroyWorkspace(ctx, ws.ID, engine.DeleteKeepHistory); err != nil || !kept {
		t.Fatalf("destroy with KEEP_HISTORY: kept=%v, %v", kept, err)
	}
	if _, err := b.ReadWorkspace(ctx, ws.ID); err != nil {
		t.Fatalf("a kept workspace is gone for B: %v", err)
	}
	if _, err := a.DestroyWorkspace(ctx, ws.ID, engine.DeleteAll); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReadWorkspace(ctx, ws.ID); !engine.IsNotFound(err) {
		t.Errorf("deleted workspace: %v", err)
	}
	if left, err := obj.List(ctx, ws.ID+"/"); err != nil || len(left) != 0 {
		t.Errorf("objects left after DELETE: %v, %v", left, err)
	}
}

// A run active on another machine is neither observed nor canceled here
// (this machine cannot see its processes, and must not record it as lost).
func TestSharedRunActiveElsewhere(t *testing.T) {
	py := python(t)
	ctx := context.Background()
	pg := postgres.Start(t)
	url := pg.NewDB(t)
	a := newEngine(t, t.TempDir(), func(o *engine.Options) { o.Shared = &engine.SharedBackend{Postgres: url, CacheDir: t.TempDir()} })
	ws, err := a.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "team", Backend: engine.BackendShared})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := a.PutRunConfig(ctx, ws.ID, engine.RunConfigSpec{Name: "rc", Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: py}}})
	if err != nil {
		t.Fatal(err)
	}
	src := writeSource(t, map[string]string{"train.py": "import time\ntime.sleep(30)\n"})
	r, err := a.SubmitRun(ctx, engine.RunRequest{WorkspaceID: ws.ID, Experiment: "exp", SourceDirectory: src, Script: "train.py", ComputeTarget: engine.LocalTarget, RunConfigID: rc.ID})
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, a, r.ID)
	// The same record, as another machine (its host) would have written it.
	s, err := store.OpenShared(ctx, store.Shared{Postgres: url, CacheRoot: t.TempDir()}, ws.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	setHost := func(h string) {
		if _, err := s.UpdateRun(ctx, r.RunID, func(rec *run.Record) error { rec.Host = h; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	host, _ := os.Hostname()
	setHost("ci-runner-7")
	seen, err := a.ReadRun(ctx, r.ID)
	if err != nil || !seen.Status.Active() || !strings.Contains(seen.Message, `active on machine "ci-runner-7"`) {
		t.Fatalf("read of another machine's run: %+v, %v", seen, err)
	}
	if _, err := a.CancelRun(ctx, r.ID); err == nil || !strings.Contains(err.Error(), "ci-runner-7") {
		t.Errorf("cancel of another machine's run: %v", err)
	}
	setHost(host)
	if _, err := a.CancelRun(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
}

// An SSH host attached on one machine is used by another that has the same
// secrets_key (its credentials sealed in the database); without the key the
// other machine is told what is missing.
func TestSharedSSHTargetAcrossMachines(t *testing.T) {
	python(t)
	ctx := context.Background()
	srv := sshd.Start(t, sshd.Options{})
	pg := postgres.Start(t)
	url := pg.NewDB(t)
	const key = "a-secrets-key-of-some-length-0123"
	machine := func(secretsKey string) *engine.Engine {
		return newEngine(t, t.TempDir(), func(o *engine.Options) {
			o.Shared = &engine.SharedBackend{Postgres: url, CacheDir: t.TempDir(), SecretsKey: secretsKey}
		})
	}
	a, b, c := machine(key), machine(key), machine("")
	ws, err := a.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "team", Backend: engine.BackendShared})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AttachRemote(ctx, ws.ID, engine.RemoteSpec{
		Name: "host", Address: "127.0.0.1", Port: srv.Port, Username: srv.User, HostKey: srv.HostKey,
	}, engine.Credentials{PrivateKey: string(srv.KeyPEM)}); err != nil {
		t.Fatalf("attach: %v\n%s", err, srv.LogTail())
	}
	rc, err := a.PutRunConfig(ctx, ws.ID, engine.RunConfigSpec{Name: "rc", Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: "python3"}}})
	if err != nil {
		t.Fatal(err)
	}
	src := writeSource(t, map[string]string{"train.py": sharedTrain})
	req := engine.RunRequest{WorkspaceID: ws.ID, Experiment: "exp", SourceDirectory: src, Script: "train.py", ComputeTarget: "host", RunConfigID: rc.ID}
	r, err := b.SubmitRun(ctx, req)
	if err != nil {
		t.Fatalf("machine B submitting to A's SSH host: %v", err)
	}
	stopAtCleanup(t, b, r.ID)
	done, err := waitRun(t, b, r.ID, 90*time.Second)
	if err != nil || done.Status != run.Completed || done.Metrics["accuracy"] != 0.9 {
		t.Fatalf("B's run on A's host: %+v, %v", done, err)
	}
	req.Arguments = []string{"again"}
	_, err = c.SubmitRun(ctx, req)
	if err == nil || !strings.Contains(err.Error(), "secrets_key") || strings.Contains(err.Error(), string(srv.KeyPEM)) {
		t.Errorf("machine C without the key: %v", err)
	}
}
