package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/testutil/wheel"
)

// System-managed environments through the engine and the real supervisor. The
// builder is whatever this host's PATH offers (uv when it runs, else venv + pip);
// packages come from wheels built here, never from the network.

func testWheel(t *testing.T, dir, name, version string) {
	t.Helper()
	if err := wheel.Write(dir, name, version); err != nil {
		t.Fatal(err)
	}
}

// testWheels has tinypkg 1.0 and 2.0 (and otherpkg 1.0).
func testWheels(t *testing.T) string { return wheel.Dir(t) }

// systemManaged makes a run configuration build its environment from links.
func systemManaged(links string, pkgs ...string) func(*engine.RunConfigSpec) {
	return func(s *engine.RunConfigSpec) {
		s.Environment = env.Environment{Python: &env.Python{Conda: &env.CondaDependencies{
			PipPackages: pkgs,
			PipOptions:  env.PipOptions{FindLinks: []string{links}, NoIndex: true},
		}}}
	}
}

const tinypkgScript = `import sys, tinypkg, aml_run
aml_run.log("tinypkg_version", float(tinypkg.__version__))
print("tinypkg", tinypkg.__version__, "prefix", sys.prefix)
`

func (te *testEnv) putRunConfig(t *testing.T, name string, mutate func(*engine.RunConfigSpec)) string {
	t.Helper()
	spec := engine.RunConfigSpec{Name: name}
	mutate(&spec)
	rc, err := te.e.PutRunConfig(context.Background(), te.wsDir, spec)
	if err != nil {
		t.Fatal(err)
	}
	return rc.ID
}

func envBuildLog(r *engine.Run) string {
	return filepath.Join(filepath.Dir(r.OutputsPath), "logs", "environment_build.log")
}

// completeEnvs lists the committed environments in a workspace's cache.
func completeEnvs(t *testing.T, ws string) (complete, other []string) {
	t.Helper()
	root := filepath.Join(ws, engine.EnvsDir)
	des, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, de := range des {
		switch {
		case !de.IsDir():
			// Locks, and the kept interpreter probes (env/probes.go), belong there.
			if !strings.HasSuffix(de.Name(), ".lock") && de.Name() != ".probes.json" {
				other = append(other, de.Name())
			}
		case fileExists(filepath.Join(root, de.Name(), ".complete")):
			complete = append(complete, de.Name())
		default:
			other = append(other, de.Name())
		}
	}
	return complete, other
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestSystemManagedEnvironment(t *testing.T) {
	t.Parallel()
	links := testWheels(t)
	te := setup(t, systemManaged(links, "tinypkg==1.0"))
	src := writeSource(t, map[string]string{"train.py": tinypkgScript})

	// Run 1 builds the environment.
	r1 := te.submit(t, te.request(src, "train.py"))
	got, err := waitRun(t, te.e, r1.ID, 2*time.Minute)
	if err != nil || got.Status != run.Completed {
		t.Fatalf("run 1: %+v %v", got, err)
	}
	if got.EnvironmentCacheHit == nil || *got.EnvironmentCacheHit || got.EnvironmentBuildSeconds == nil || *got.EnvironmentBuildSeconds <= 0 {
		t.Errorf("run 1 environment: cache hit %v, build seconds %v; want a build", deref(got.EnvironmentCacheHit), deref(got.EnvironmentBuildSeconds))
	}
	if got.Metrics["tinypkg_version"] != 1.0 {
		t.Errorf("run 1 metrics %v, want tinypkg_version 1 (log:\n%s)", got.Metrics, got.LogTail)
	}
	if envRoot := filepath.Join(te.wsDir, engine.EnvsDir); !strings.Contains(got.LogTail, "prefix "+envRoot) {
		t.Errorf("the script did not run in the workspace's environment cache %s:\n%s", envRoot, got.LogTail)
	}
	b, err := os.ReadFile(envBuildLog(got))
	if err != nil {
		t.Fatalf("run 1 has no environment build log: %v", err)
	}
	t.Logf("run 1 built its environment in %.2fs:\n%s", *got.EnvironmentBuildSeconds, b)
	if !strings.Contains(string(b), "$ ") || !strings.Contains(string(b), "tinypkg") {
		t.Errorf("environment_build.log does not show the build:\n%s", b)
	}

	// Run 2 with the same configuration finds it in the cache.
	r2 := te.submit(t, te.request(src, "train.py"))
	got2, err := waitRun(t, te.e, r2.ID, time.Minute)
	if err != nil || got2.Status != run.Completed || got2.Metrics["tinypkg_version"] != 1.0 {
		t.Fatalf("run 2: %+v %v", got2, err)
	}
	if got2.EnvironmentCacheHit == nil || !*got2.EnvironmentCacheHit || got2.EnvironmentBuildSeconds == nil || *got2.EnvironmentBuildSeconds != 0 {
		t.Errorf("run 2 environment: cache hit %v, build seconds %v; want a hit", deref(got2.EnvironmentCacheHit), deref(got2.EnvironmentBuildSeconds))
	}
	if got2.EnvironmentHash != got.EnvironmentHash {
		t.Errorf("environment key %s, then %s", got.EnvironmentHash, got2.EnvironmentHash)
	}
	if b, err := os.ReadFile(envBuildLog(got2)); err != nil || len(b) != 0 {
		t.Errorf("run 2 build log (a cache hit installs nothing): %q %v", b, err)
	}
	if complete, other := completeEnvs(t, te.wsDir); len(complete) != 1 || len(other) != 0 {
		t.Errorf("environment cache: complete %v, other %v; want one environment", complete, other)
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// Four runs of a configuration whose environment is not built yet: one builds it,
// the others wait for it and reuse it.
func TestSystemManagedEnvironmentConcurrentRuns(t *testing.T) {
	t.Parallel()
	links := testWheels(t)
	te := setup(t, systemManaged(links, "tinypkg==2.0"))
	src := writeSource(t, map[string]string{"train.py": tinypkgScript})
	const n = 4
	runs, errs := runConcurrently(te.e, n, 2*time.Minute, func(i int) engine.RunRequest {
		return te.request(src, "train.py", fmt.Sprint(i))
	})
	built := 0
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("run %d: %v", i, errs[i])
		}
		r := runs[i]
		stopAtCleanup(t, te.e, r.ID)
		if r.Status != run.Completed || r.Metrics["tinypkg_version"] != 2.0 || r.EnvironmentCacheHit == nil {
			t.Errorf("run %d: %s, metrics %v, cache hit %v", i, r.Status, r.Metrics, deref(r.EnvironmentCacheHit))
			continue
		}
		if !*r.EnvironmentCacheHit {
			built++
		}
	}
	if built != 1 {
		t.Errorf("%d concurrent runs built the environment %d times, want once", n, built)
	}
	if complete, other := completeEnvs(t, te.wsDir); len(complete) != 1 || len(other) != 0 {
		t.Errorf("environment cache: complete %v, other %v; want one environment", complete, other)
	}
}

// A build that fails fails the run (setup_failed) with the installer's message,
// and leaves nothing in the cache.
func TestSystemManagedEnvironmentBuildFails(t *testing.T) {
	t.Parallel()
	links := testWheels(t)
	te := setup(t, systemManaged(links, "tinypkg==1.0", "doesnotexist-pkg==1.0"))
	src := writeSource(t, map[string]string{"train.py": tinypkgScript})
	sub := te.submit(t, te.request(src, "train.py"))
	r, err := waitRun(t, te.e, sub.ID, 2*time.Minute)
	var rf *engine.RunFailedError
	if !errors.As(err, &rf) {
		t.Fatalf("err = %v (%T), want *engine.RunFailedError", err, err)
	}
	if r.Status != run.Failed || r.FailureReason != run.ReasonSetupFailed || r.ExitCode != nil {
		t.Fatalf("run = %s/%s exit %v, want Failed/%s without an exit code", r.Status, r.FailureReason, deref(r.ExitCode), run.ReasonSetupFailed)
	}
	msg := err.Error()
	t.Logf("failed run:\n%s", msg)
	if !strings.Contains(msg, "doesnotexist-pkg") || !(strings.Contains(msg, "No matching distribution") || strings.Contains(msg, "not found")) {
		t.Errorf("the error does not carry the installer's message:\n%s", msg)
	}
	if r.EnvironmentCacheHit != nil {
		t.Errorf("a failed build reports cache hit %v", *r.EnvironmentCacheHit)
	}
	if b, err := os.ReadFile(envBuildLog(r)); err != nil || !strings.Contains(string(b), "doesnotexist-pkg") {
		t.Errorf("environment_build.log lacks the installer's output: %v\n%s", err, b)
	}
	if complete, other := completeEnvs(t, te.wsDir); len(complete) != 0 || len(other) != 0 {
		t.Errorf("a failed build left complete %v, other %v in the cache", complete, other)
	}

	// Fix the definition (the package appears): the next run builds and completes.
	testWheel(t, links, "doesnotexist-pkg", "1.0")
	again := te.submit(t, te.request(src, "train.py"))
	r2, err := waitRun(t, te.e, again.ID, 2*time.Minute)
	if err != nil || r2.Status != run.Completed || r2.EnvironmentCacheHit == nil || *r2.EnvironmentCacheHit {
		t.Fatalf("run after the fix: %+v %v", r2, err)
	}
}
