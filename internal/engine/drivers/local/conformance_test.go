package local_test

import (
	"path/filepath"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/driverstest"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/local"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

func TestConformance(t *testing.T) {
	ws := t.TempDir()
	driverstest.Run(t, driverstest.Target{
		Open: func(t *testing.T) drivers.Driver {
			return &local.Driver{RunsRoot: filepath.Join(ws, "runs"), EnvRoot: filepath.Join(ws, "envs"), AgentCommand: agentCommand(t)}
		},
		Blobs: snapshot.BlobStore{Root: filepath.Join(ws, "blobs")},
	})
}
