package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// What a shared workspace adds to a run's life: the snapshot's blobs go to
// the object store before the run is recorded, its outputs and logs go there
// before the record says it ended, and another machine's refresh copies them
// into its own cache. On an embedded workspace each step is a no-op.

// manifestBlobs lists the distinct blobs of a manifest's regular files.
func manifestBlobs(m *snapshot.Manifest) []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range m.Entries {
		if e.Mode == snapshot.ModeSymlink || seen[e.SHA256] {
			continue
		}
		seen[e.SHA256] = true
		out = append(out, e.SHA256)
	}
	return out
}

// pushSnapshot uploads the blobs the object store lacks: the files' and the
// manifest's own (extra).
func pushSnapshot(ctx context.Context, s *store.Store, m *snapshot.Manifest, extra ...string) error {
	if err := s.PushBlobs(ctx, append(manifestBlobs(m), extra...)); err != nil {
		return fmt.Errorf("storing snapshot in %s: %w", s.Objects(), err)
	}
	return nil
}

// pushCollected uploads a collected run's outputs and logs. It runs before the
// record is updated: a record never says a run ended with results the bucket
// does not have (the next refresh collects and uploads again).
func pushCollected(ctx context.Context, s *store.Store, runID string, col drivers.Collected) error {
	if s.Objects() == nil {
		return nil
	}
	logs := ""
	if col.LogPath != "" {
		logs = filepath.Dir(col.LogPath)
	}
	if err := s.PushRunFiles(ctx, runID, col.OutputsPath, logs); err != nil {
		return fmt.Errorf("run %s ended, but its outputs and logs could not be stored in %s (the run record is unchanged; the next refresh retries): %w", runID, s.Objects(), err)
	}
	return nil
}

// localCopy gives a finished run of a shared workspace its files in this
// machine's cache when they are not there (another machine ran it, or the
// cache was lost), so outputs_path is usable wherever Terraform runs.
func localCopy(ctx context.Context, s *store.Store, rec *run.Record) error {
	if s.Objects() == nil || !rec.Status.Terminal() || rec.OutputsPath == "" || filepath.IsAbs(rec.OutputsPath) {
		return nil
	}
	outputs := fromWorkspace(s.Dir, rec.OutputsPath)
	logPath := fromWorkspace(s.Dir, rec.LogPath)
	_, oerr := os.Stat(outputs)
	_, lerr := os.Stat(logPath)
	if !errors.Is(oerr, os.ErrNotExist) && (rec.LogPath == "" || !errors.Is(lerr, os.ErrNotExist)) {
		return nil
	}
	if _, err := s.FetchRunFiles(ctx, rec.ID); err != nil {
		return fmt.Errorf("copying run %s files from %s: %w", rec.ID, s.Objects(), err)
	}
	// A run without outputs still has its directory.
	return os.MkdirAll(outputs, 0o755)
}
