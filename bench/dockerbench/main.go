// Command dockerbench times cache-hit runs of one system-managed environment on
// the local target, in Docker (the image built once per environment key) and
// on the host (the virtual environment built once per key), through the local
// driver (stage, detached supervisor, wait) as the engine runs them. It starts a
// private Docker engine (internal/testutil/docker; root, Debian's docker.io)
// and prints JSON on stdout: the seconds of every run of each contender.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/agent"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/local"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	dockertest "github.com/openaml/terraform-provider-aml/internal/testutil/docker"
)

const script = `import six, aml_run
aml_run.log("six", 1.0)
`

func main() {
	agent.MaybeRun()
	n := flag.Int("n", 5, "cache-hit runs per contender")
	pkg := flag.String("pkg", "six==1.16.0", "pip package of the environment")
	flag.Parse()
	if err := bench(*n, *pkg); err != nil {
		fmt.Fprintln(os.Stderr, "dockerbench:", err)
		os.Exit(1)
	}
}

func bench(n int, pkg string) error {
	eng, err := dockertest.StartEngine()
	if err != nil {
		return err
	}
	defer eng.Stop()
	os.Setenv("DOCKER_HOST", eng.Host)
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	ws, err := os.MkdirTemp("", "aml-dockerbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(ws)
	src := filepath.Join(ws, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "train.py"), []byte(script), 0o644); err != nil {
		return err
	}
	ctx := context.Background()
	blobs := snapshot.BlobStore{Root: filepath.Join(ws, "blobs")}
	m, err := snapshot.Build(ctx, src, snapshot.Options{})
	if err != nil {
		return err
	}
	if err := blobs.Ingest(ctx, src, m); err != nil {
		return err
	}
	drv := &local.Driver{RunsRoot: filepath.Join(ws, "runs"), EnvRoot: filepath.Join(ws, "envs"), AgentCommand: []string{exe, "agent"}}
	py := &env.Python{Conda: &env.CondaDependencies{PipPackages: []string{pkg}}}
	host := env.Environment{Python: py}
	docker := env.Environment{Python: py, Docker: &env.Docker{Enabled: true, BaseImage: eng.BaseImage}}
	seq := 0
	runOnce := func(e env.Environment) (float64, bool, error) {
		launch, err := drv.PrepareEnvironment(ctx, e)
		if err != nil {
			return 0, false, err
		}
		seq++
		id := fmt.Sprintf("bench_%d", seq)
		start := time.Now()
		h, err := drv.Start(ctx, drivers.RunSpec{RunID: id, Manifest: m, Blobs: blobs, Program: drivers.Program{Script: "train.py"}, Launch: launch, Grace: 5 * time.Second})
		if err != nil {
			return 0, false, err
		}
		ex, err := drv.Recover(ctx, h)
		if err != nil {
			return 0, false, err
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		st, err := ex.Wait(wctx)
		secs := time.Since(start).Seconds()
		if err != nil {
			return 0, false, err
		}
		if st.Status != run.Completed {
			return 0, false, fmt.Errorf("run %s ended %s: %s", id, st.Status, st.Message)
		}
		hit := st.Environment != nil && st.Environment.CacheHit
		return secs, hit, nil
	}
	out := map[string]any{}
	for name, e := range map[string]env.Environment{"host": host, "docker": docker} {
		first, _, err := runOnce(e) // builds the environment (not a cache hit)
		if err != nil {
			return fmt.Errorf("%s first run: %w", name, err)
		}
		out[name+"_first"] = first
	}
	var hostS, dockerS []float64
	for i := 0; i < n; i++ { // interleaved
		for _, c := range []struct {
			e   env.Environment
			dst *[]float64
		}{{host, &hostS}, {docker, &dockerS}} {
			s, hit, err := runOnce(c.e)
			if err != nil {
				return err
			}
			if !hit {
				return fmt.Errorf("a repeated run was not a cache hit")
			}
			*c.dst = append(*c.dst, s)
		}
	}
	bare := []float64{}
	for i := 0; i < n; i++ {
		start := time.Now()
		if out, err := eng.Docker(ctx, "run", "--rm", eng.BaseImage, "python3", "-c", "pass"); err != nil {
			return fmt.Errorf("bare docker run: %v: %s", err, out)
		}
		bare = append(bare, time.Since(start).Seconds())
	}
	out["host"], out["docker"], out["bare_docker_run"] = hostS, dockerS, bare
	return json.NewEncoder(os.Stdout).Encode(out)
}
