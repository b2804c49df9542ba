package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
	"github.com/openaml/terraform-provider-aml/internal/testutil/postgres"
	s3test "github.com/openaml/terraform-provider-aml/internal/testutil/s3"
)

// aml --backend reads a workspace of the shared backend from another
// machine: its own empty cache, the run's log and metrics through PostgreSQL
// and the bucket.
func TestSharedBackendFromAnotherMachine(t *testing.T) {
	py := python(t)
	ctx := context.Background()
	pg := postgres.Start(t)
	srv := s3test.Start(t)
	cfg := srv.Config(srv.Bucket(t))
	url := pg.NewDB(t)
	e, err := engine.New(engine.Options{AgentCommand: []string{selfExe(t), "agent"}, WorkDir: t.TempDir(), StatCacheDir: t.TempDir(),
		Shared: &engine.SharedBackend{Postgres: url, S3: cfg, CacheDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	ws, err := e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "team-cli", Backend: engine.BackendShared})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := e.PutRunConfig(ctx, ws.ID, engine.RunConfigSpec{Name: "py", Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: py}}})
	if err != nil {
		t.Fatal(err)
	}
	src := testutil.WriteFiles(t, t.TempDir(), map[string]string{"train.py": trainScript})
	sub, err := e.SubmitRun(ctx, engine.RunRequest{WorkspaceID: ws.ID, Experiment: "shared", SourceDirectory: src, Script: "train.py",
		Arguments: []string{"3", "0"}, ComputeTarget: engine.LocalTarget, RunConfigID: rc.ID})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if r, err := e.WaitRun(wctx, sub.ID); err != nil || r.Status != "Completed" {
		t.Fatalf("run: %v %+v", err, r)
	}

	// The other machine: nothing but the backend's address and the bucket.
	cache := t.TempDir()
	for k, v := range map[string]string{"AML_S3_BUCKET": cfg.Bucket, "AML_S3_ENDPOINT": cfg.Endpoint, "AWS_REGION": cfg.Region,
		"AWS_ACCESS_KEY_ID": cfg.AccessKeyID, "AWS_SECRET_ACCESS_KEY": cfg.SecretAccessKey, "AML_CACHE_DIR": cache} {
		t.Setenv(k, v)
	}
	elsewhere := t.TempDir()
	out := aml(t, elsewhere, "runs", "--backend", url, "-w", "team-cli").ok(t).stdout
	if !strings.Contains(out, sub.RunID) || !strings.Contains(out, "Completed") {
		t.Errorf("aml runs on the other machine:\n%s", out)
	}
	if out := aml(t, elsewhere, "logs", "--backend", url, "-w", ws.ID, sub.RunID).ok(t).stdout; !strings.Contains(out, "done") {
		t.Errorf("aml logs through the bucket:\n%s", out)
	}
	if out := aml(t, elsewhere, "metrics", "--backend", url, "-w", "team-cli", "--json", sub.RunID).ok(t).stdout; !strings.Contains(out, "accuracy") {
		t.Errorf("aml metrics:\n%s", out)
	}
	if logs, _ := filepath.Glob(filepath.Join(cache, "*", "runs", sub.RunID, "logs", "*")); len(logs) == 0 {
		t.Errorf("the log was not brought into the other machine's cache %s", cache)
	}
	if r := aml(t, elsewhere, "runs", "--backend", url, "-w", "nobody"); r.code != exitNotFound {
		t.Errorf("unknown shared workspace: exit %d %s", r.code, r.stderr)
	}
}
