package pool_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/driverstest"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/pool"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
	dockertest "github.com/openaml/terraform-provider-aml/internal/testutil/docker"
)

// Node agents and supervisors are this test binary, re-executed with "agent".
func TestMain(m *testing.M) { testutil.Main(m, func() func() { return dockertest.Stop }) }

// The suite over a real managed pool of this workspace: node agents claim the
// queued runs, a 2-node run is gang-scheduled.
func TestConformance(t *testing.T) { conformance(t, driverstest.Target{}) }

// The suite over the pool with every rank in a container of the private
// engine's base image.
func TestConformanceDocker(t *testing.T) {
	eng := dockertest.Shared(t)
	conformance(t, driverstest.Target{
		Launch: env.Launch{Docker: &env.Docker{Enabled: true, BaseImage: eng.BaseImage, Network: "host"}, Interpreter: "python3"},
		Containers: func(t *testing.T, runID string) []string {
			return eng.Containers(t, supervise.LabelRunID+"="+runID, true)
		},
	})
}

func conformance(t *testing.T, tgt driverstest.Target) {
	ctx := context.Background()
	dir := t.TempDir() + "/ws"
	s, err := store.Create(ctx, dir, store.Meta{Name: "conformance"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	w := &drivers.Workspace{Store: s, AgentCommand: []string{exe, "agent"}}
	kind, err := drivers.Lookup(pool.Kind)
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(pool.Spec{VMSize: "STANDARD_D1_V2", MaxNodes: 2, IdleSecondsBeforeScaledown: 60})
	rec, _, err := kind.Attach(ctx, w, "conf", spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec.Name, rec.Kind = "conf", pool.Kind
	if err := s.PutTarget(ctx, rec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := kind.Release(context.Background(), w, rec); err != nil {
			t.Errorf("draining the pool: %v", err)
		}
	})
	tgt.Open = func(t *testing.T) drivers.Driver {
		d, err := kind.Open(ctx, w, rec)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	tgt.Blobs = w.Blobs()
	driverstest.Run(t, tgt)
}
