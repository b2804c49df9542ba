package engine_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// A checkout copied elsewhere (with its .aml/ and state), as on a CI runner
// at another path: the same ids open the copies, for a workspace in the
// default place and for one at a relative storage_path.
func TestWorkspaceIDsSurviveAMovedCheckout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	py := python(t)
	a := filepath.Join(t.TempDir(), "a")
	e := newEngine(t, a)
	def, err := e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "defws"})
	if err != nil {
		t.Fatal(err)
	}
	rel, err := e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "relws", StoragePath: "./sub/../wsdir/"})
	if err != nil {
		t.Fatal(err)
	}
	if rel.StoragePath != "./sub/../wsdir/" || rel.Dir != filepath.Join(a, "wsdir") {
		t.Fatalf("relative storage_path: %+v", rel)
	}
	for _, id := range []string{def.ID, rel.ID} {
		if strings.Contains(id, "/") || !engine.IsWorkspaceID(id) {
			t.Fatalf("workspace id %q names a path", id)
		}
	}
	src := writeSource(t, map[string]string{"train.py": "import aml_run\naml_run.log('acc', 0.5)\n"})
	rc, err := e.PutRunConfig(ctx, rel.ID, engine.RunConfigSpec{Name: "user", Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: py}}})
	if err != nil {
		t.Fatal(err)
	}
	req := engine.RunRequest{WorkspaceID: rel.ID, Experiment: "exp", SourceDirectory: src, Script: "train.py", ComputeTarget: engine.LocalTarget, RunConfigID: rc.ID}
	sub, err := e.SubmitRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	r, err := waitRun(t, e, sub.ID, time.Minute)
	if err != nil || r.Status != run.Completed {
		t.Fatalf("run: %v %+v", err, r)
	}
	if !strings.HasPrefix(r.ID, rel.ID+"/runs/") || strings.Contains(r.RunConfigID, a) {
		t.Fatalf("run ids name a path: %s %s", r.ID, r.RunConfigID)
	}
	e.Close()

	b := filepath.Join(filepath.Dir(a), "b")
	if out, err := exec.Command("cp", "-a", a, b).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	// The copy is found through B's own pointers, not A's: move A away.
	if err := os.Rename(a, a+".gone"); err != nil {
		t.Fatal(err)
	}
	eb := newEngine(t, b)
	for _, ws := range []*engine.Workspace{def, rel} {
		got, err := eb.ReadWorkspace(ctx, ws.ID)
		if err != nil {
			t.Fatalf("workspace %s in the copy: %v", ws.Name, err)
		}
		if got.ID != ws.ID || !strings.HasPrefix(got.Dir, b) || got.StoragePath != ws.StoragePath {
			t.Errorf("copy of %s: %+v", ws.Name, got)
		}
	}
	got, err := eb.ReadRun(ctx, r.ID)
	if err != nil || got.Status != run.Completed || got.Metrics["acc"] != 0.5 || !strings.HasPrefix(got.OutputsPath, b) {
		t.Fatalf("run in the copy: %v %+v", err, got)
	}

	// Without pointers a default-place workspace is still found by scanning.
	if err := os.RemoveAll(filepath.Join(b, engine.DefaultWorkspaceRoot, ".ids")); err != nil {
		t.Fatal(err)
	}
	if _, err := newEngine(t, b).ReadWorkspace(ctx, def.ID); err != nil {
		t.Errorf("default workspace without its pointer: %v", err)
	}
	// A workspace that is on no path we know of is "not found", which Terraform
	// takes as gone; the message says where it looked.
	_, err = newEngine(t, t.TempDir()).ReadWorkspace(ctx, rel.ID)
	if !engine.IsNotFound(err) || !strings.Contains(err.Error(), "not on this machine") {
		t.Errorf("unknown workspace: %v", err)
	}
	if _, err := eb.ReadWorkspace(ctx, "not-a/uuid"); err == nil || engine.IsNotFound(err) {
		t.Errorf("malformed id: %v", err)
	}
}

// State written before ids were UUIDs names workspaces by directory; the
// upgrade rewrites every id-valued attribute, and leaves a workspace that is
// not here as it was.
func TestUpgradeStateRewritesDirectoryIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	workDir := t.TempDir()
	e := newEngine(t, workDir)
	ws, err := e.CreateWorkspace(ctx, engine.WorkspaceSpec{Name: "old"})
	if err != nil {
		t.Fatal(err)
	}
	attrs := map[string]any{
		"id":                   ws.Dir + "/runs/exp_1_abcd",
		"workspace_id":         ws.Dir,
		"run_configuration_id": ws.Dir + "/runconfigs/rc",
		"name":                 "old",
		"storage_path":         ws.Dir,
		"script":               "/abs/not/an/id",
	}
	e.UpgradeState(ctx, attrs)
	want := map[string]any{
		"id": ws.ID + "/runs/exp_1_abcd", "workspace_id": ws.ID, "run_configuration_id": ws.ID + "/runconfigs/rc",
		"name": "old", "storage_path": ".aml/workspaces/old", "script": "/abs/not/an/id",
	}
	for k, v := range want {
		if attrs[k] != v {
			t.Errorf("%s = %v, want %v", k, attrs[k], v)
		}
	}
	gone := map[string]any{"workspace_id": "/nowhere/ws", "id": "/nowhere/ws/targets/t"}
	e.UpgradeState(ctx, gone)
	if gone["workspace_id"] != "/nowhere/ws" || gone["id"] != "/nowhere/ws/targets/t" {
		t.Errorf("a workspace that is not here was rewritten: %v", gone)
	}
	// Old ids still open the workspace where it is.
	if got, err := e.ReadWorkspace(ctx, ws.Dir); err != nil || got.ID != ws.ID {
		t.Errorf("legacy id: %v %+v", err, got)
	}
}
