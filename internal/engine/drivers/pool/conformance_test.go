package pool_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/driverstest"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/pool"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
)

// Node agents and supervisors are this test binary, re-executed with "agent".
func TestMain(m *testing.M) { testutil.Main(m, nil) }

// The suite over a real managed pool of this workspace: node agents claim the
// queued runs, a 2-node run is gang-scheduled.
func TestConformance(t *testing.T) {
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
	driverstest.Run(t, driverstest.Target{
		Open: func(t *testing.T) drivers.Driver {
			d, err := kind.Open(ctx, w, rec)
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
		Blobs: w.Blobs(),
	})
}
