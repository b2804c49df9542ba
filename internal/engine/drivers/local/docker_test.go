package local_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/driverstest"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/local"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	dockertest "github.com/openaml/terraform-provider-aml/internal/testutil/docker"
)

// The conformance suite with every run in a container of the private engine's
// base image (user-managed: the image's python3).
func TestConformanceDocker(t *testing.T) {
	eng := dockertest.Shared(t)
	ws := t.TempDir()
	driverstest.Run(t, driverstest.Target{
		Open: func(t *testing.T) drivers.Driver {
			return &local.Driver{RunsRoot: filepath.Join(ws, "runs"), EnvRoot: filepath.Join(ws, "envs"), AgentCommand: agentCommand(t)}
		},
		Blobs:  snapshot.BlobStore{Root: filepath.Join(ws, "blobs")},
		Launch: env.Launch{Docker: &env.Docker{Enabled: true, BaseImage: eng.BaseImage}, Interpreter: "python3"},
		Containers: func(t *testing.T, runID string) []string {
			return eng.Containers(t, supervise.LabelRunID+"="+runID, true)
		},
	})
}

// A run in Docker with registry credentials writes the password nowhere in
// the run directory (spec, status, logs), and the max duration stops the
// container: Failed/timed_out with the container's exit code, no container left.
func TestDockerSecretsAndTimeLimit(t *testing.T) {
	eng := dockertest.Shared(t)
	const password = "pw-never-written-4711"
	ws := t.TempDir()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "sleep.py"), []byte("import time\nprint('sleeping', flush=True)\ntime.sleep(120)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	blobs := snapshot.BlobStore{Root: filepath.Join(ws, "blobs")}
	m, err := snapshot.Build(ctx, src, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := blobs.Ingest(ctx, src, m); err != nil {
		t.Fatal(err)
	}
	drv := &local.Driver{RunsRoot: filepath.Join(ws, "runs"), EnvRoot: filepath.Join(ws, "envs"), AgentCommand: agentCommand(t)}
	d := &env.Docker{Enabled: true, BaseImage: eng.BaseImage, Registry: &env.Registry{Address: "registry.example", Username: "bot", Password: password}}
	id := fmt.Sprintf("secret_%d", time.Now().UnixNano())
	h, err := drv.Start(ctx, drivers.RunSpec{
		RunID: id, Manifest: m, Blobs: blobs, Program: drivers.Program{Script: "sleep.py"},
		Launch: env.Launch{Docker: d, Interpreter: "python3"}, MaxDuration: 3 * time.Second, Grace: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := drv.Recover(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	st := wait(t, ex, 2*time.Minute)
	if st.Status != run.Failed || st.FailureReason != run.ReasonTimedOut || st.ExitCode == nil || *st.ExitCode != 143 {
		t.Fatalf("state %+v, want Failed/timed_out with the container's exit code 143 (SIGTERM)", st)
	}
	if left := eng.Containers(t, supervise.LabelRunID+"="+id, true); len(left) > 0 {
		t.Errorf("containers left: %v", left)
	}
	runDir := filepath.Join(drv.RunsRoot, id)
	err = filepath.WalkDir(runDir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || !de.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(password)) {
			t.Errorf("%s holds the registry password", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// An image without the interpreter the run names fails the run with the
// container's exit code 127 (the container's init could not exec it), the log
// saying so, and leaves no container.
func TestDockerMissingInterpreter(t *testing.T) {
	eng := dockertest.Shared(t)
	f := newFixture(t, map[string]string{"train.py": "print('never')\n"})
	f.drv.EnvRoot = filepath.Join(t.TempDir(), "envs")
	ctx := context.Background()
	m, err := snapshot.Build(ctx, f.src, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.blobs.Ingest(ctx, f.src, m); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("nointerp_%d", time.Now().UnixNano())
	h, err := f.drv.Start(ctx, drivers.RunSpec{
		RunID: id, Manifest: m, Blobs: f.blobs, Program: drivers.Program{Script: "train.py"},
		Launch: env.Launch{Docker: &env.Docker{Enabled: true, BaseImage: eng.BaseImage}, Interpreter: "no-such-python"}, Grace: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := f.drv.Recover(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	st := wait(t, ex, time.Minute)
	if st.Status != run.Failed || st.ExitCode == nil || *st.ExitCode != 127 {
		t.Fatalf("state %+v, want Failed with exit code 127", st)
	}
	col, err := ex.Collect(ctx)
	if err != nil || !bytes.Contains([]byte(col.LogTail), []byte("no-such-python")) {
		t.Errorf("log tail %q (%v) does not name the missing interpreter", col.LogTail, err)
	}
	if left := eng.Containers(t, supervise.LabelRunID+"="+id, true); len(left) > 0 {
		t.Errorf("containers left: %v", left)
	}
}
