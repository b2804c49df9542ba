package ssh_test

import (
	"os"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/driverstest"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/sshhost"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
	dockertest "github.com/openaml/terraform-provider-aml/internal/testutil/docker"
	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
)

// The driver stages this test binary on the host as the agent.
func TestMain(m *testing.M) { testutil.Main(m, func() func() { return dockertest.Stop }) }

// The suite over a real sshd on 127.0.0.1: every driver value it opens is new
// (its own connection pool), as in a new provider process.
func TestConformance(t *testing.T) { conformance(t, sshd.Options{}, driverstest.Target{}) }

// The suite with every run in a container on the host, whose engine (this
// machine's private one) its login sessions get through DOCKER_HOST.
func TestConformanceDocker(t *testing.T) {
	eng := dockertest.Shared(t)
	conformance(t, sshd.Options{SessionEnv: map[string]string{"DOCKER_HOST": eng.Host}}, driverstest.Target{
		Launch: env.Launch{Docker: &env.Docker{Enabled: true, BaseImage: eng.BaseImage}, Interpreter: "python3"},
		Containers: func(t *testing.T, runID string) []string {
			return eng.Containers(t, supervise.LabelRunID+"="+runID, true)
		},
	})
}

func conformance(t *testing.T, opts sshd.Options, tgt driverstest.Target) {
	srv := sshd.Start(t, opts)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	blobs := snapshot.BlobStore{Root: t.TempDir()}
	runs := t.TempDir()
	tgt.Open = func(t *testing.T) drivers.Driver {
		pool := remote.NewPool()
		t.Cleanup(pool.Close)
		return &sshhost.Driver{Pool: pool, Endpoint: srv.Endpoint(), Root: srv.Home + "/.aml", LocalRunsRoot: runs, Blobs: blobs, AgentPath: exe}
	}
	tgt.Blobs = blobs
	driverstest.Run(t, tgt)
}
