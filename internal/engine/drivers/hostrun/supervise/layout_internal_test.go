package supervise

import (
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

// The run directory's control directory is the one name a snapshot never
// contains: a snapshot file can never overwrite the run's spec or status.
func TestControlDirIsSnapshotReserved(t *testing.T) {
	if ControlDir != snapshot.ReservedDir {
		t.Fatalf("ControlDir %q, snapshot.ReservedDir %q", ControlDir, snapshot.ReservedDir)
	}
}
