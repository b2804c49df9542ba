package pool

import (
	"os"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// Another machine's node (a shared workspace) is never judged by a process
// of this machine: it is left to its lease, and never signaled from here.
func TestNodeOfAnotherMachine(t *testing.T) {
	gone := store.NodeRow{Host: store.Hostname(), PID: 1 << 30}
	if nodeAlive(gone) || !nodeHere(gone) {
		t.Errorf("a node of this machine with no process: alive=%v here=%v", nodeAlive(gone), nodeHere(gone))
	}
	other := store.NodeRow{Host: store.Hostname() + "-elsewhere", PID: os.Getpid()}
	if !nodeAlive(other) || nodeHere(other) {
		t.Errorf("another machine's node: alive=%v here=%v", nodeAlive(other), nodeHere(other))
	}
	if legacy := (store.NodeRow{PID: 1 << 30}); !nodeHere(legacy) || nodeAlive(legacy) {
		t.Error("a node row from before hosts were recorded is this machine's")
	}
}
