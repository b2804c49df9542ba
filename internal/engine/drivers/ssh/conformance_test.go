package ssh

import (
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/driverstest"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
)

// The suite over a real sshd on 127.0.0.1: every driver value it opens is new
// (its own connection pool), as in a new provider process.
func TestConformance(t *testing.T) {
	base, _ := newDriver(t)
	driverstest.Run(t, driverstest.Target{
		Open: func(t *testing.T) drivers.Driver {
			d := *base
			d.Pool = remote.NewPool()
			t.Cleanup(d.Pool.Close)
			return &d
		},
		Blobs: base.Blobs,
	})
}
