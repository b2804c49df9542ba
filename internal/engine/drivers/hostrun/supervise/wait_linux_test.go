package supervise

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The watch wakes when a status is renamed into place, not for other files.
func TestStatusWatchWakesOnStatusOnly(t *testing.T) {
	dir := t.TempDir()
	status := filepath.Join(dir, statusFile)
	w, err := WatchStatus(status)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := os.WriteFile(filepath.Join(dir, metricsFile), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.C:
		t.Fatal("woke for the metrics file")
	case <-time.After(100 * time.Millisecond):
	}
	if err := WriteJSONAtomic(status, map[string]string{"status": "Completed"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.C:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake after the status was renamed into place")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
