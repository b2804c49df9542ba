package local_test

import (
	"path/filepath"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/driverstest"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/local"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
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
			return eng.Containers(t, hostrun.LabelRunID+"="+runID, true)
		},
	})
}
