package ssh_test

import (
	"os"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/driverstest"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/sshhost"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
)

// The driver stages this test binary on the host as the agent.
func TestMain(m *testing.M) { testutil.Main(m, nil) }

// The suite over a real sshd on 127.0.0.1: every driver value it opens is new
// (its own connection pool), as in a new provider process.
func TestConformance(t *testing.T) {
	srv := sshd.Start(t, sshd.Options{})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	blobs := snapshot.BlobStore{Root: t.TempDir()}
	runs := t.TempDir()
	driverstest.Run(t, driverstest.Target{
		Open: func(t *testing.T) drivers.Driver {
			pool := remote.NewPool()
			t.Cleanup(pool.Close)
			return &sshhost.Driver{Pool: pool, Endpoint: srv.Endpoint(), Root: srv.Home + "/.aml", LocalRunsRoot: runs, Blobs: blobs, AgentPath: exe}
		},
		Blobs: blobs,
	})
}
