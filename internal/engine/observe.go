package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

// What the `aml` command line and web view read of a workspace: they observe,
// they never change a run (but for `aml cancel`).

// mergePhases keeps the first time of each status: the host's, else now for
// a status the engine observes first.
func mergePhases(have, host map[run.Status]time.Time, now run.Status) map[run.Status]time.Time {
	if len(host) == 0 && (now == "" || have[now] != (time.Time{})) {
		return have
	}
	out := make(map[run.Status]time.Time, len(have)+len(host)+1)
	for k, v := range have {
		out[k] = v
	}
	for k, v := range host {
		if old, ok := out[k]; !ok || v.Before(old) {
			out[k] = v
		}
	}
	if _, ok := out[now]; !ok && now != "" {
		out[now] = time.Now().UTC()
	}
	return out
}

// MaxLogChunk bounds what one RunLogs call returns.
const MaxLogChunk = 1 << 20

// ListTargets describes every compute target of a workspace, "local" first,
// with live node counts for kinds that have nodes. A target that cannot be
// described (its host unreachable) is listed with the error as its state.
func (e *Engine) ListTargets(ctx context.Context, workspaceID string) ([]*Target, error) {
	s, err := e.open(ctx, workspaceID)
	if err != nil {
		return nil, err
	}
	names, err := s.TargetNames(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*Target, 0, len(names)+1)
	for _, name := range append([]string{LocalTarget}, names...) {
		row, _, err := e.targetRecord(ctx, s, name, "name")
		if err == nil {
			var t *Target
			if t, err = e.describe(ctx, s, row); err == nil {
				out = append(out, t)
				continue
			}
		}
		out = append(out, &Target{ID: TargetID(s.UID, name), WorkspaceID: s.UID, Name: name, Kind: row.Kind,
			ProvisioningState: "Unknown: " + run.SanitizeText(err.Error()), CreatedAt: row.CreatedAt})
	}
	return out, nil
}

// RunLogs returns a run's log from offset (at most MaxLogChunk bytes), the
// next offset and whether the run was still active when read. An active run's
// log comes from its target (resumable on every kind: a local file, an SSH
// host, a pool node); a finished run's from the log its target brought back.
// Follow a run by calling again with next until active is false and the chunk
// is empty.
func (e *Engine) RunLogs(ctx context.Context, id string, offset int64) (b []byte, next int64, active bool, err error) {
	if offset < 0 {
		offset = 0
	}
	s, rec, err := e.load(ctx, id)
	if err != nil {
		return nil, offset, false, err
	}
	if rec.Status.Active() && len(rec.Handle) > 0 {
		r, err := e.refresh(ctx, s, rec)
		if err != nil {
			return nil, offset, true, err
		}
		if r.Status.Active() {
			ex, err := e.recoverRun(ctx, s, rec)
			if err != nil {
				return nil, offset, true, err
			}
			b, next, err := ex.Logs(ctx, offset)
			if drivers.IsUnreachable(err) {
				return nil, offset, true, nil // the run goes on; read again later
			}
			if len(b) > MaxLogChunk {
				b, next = b[:MaxLogChunk], offset+MaxLogChunk
			}
			return b, next, true, err
		}
		if rec, err = s.GetRun(ctx, rec.ID); err != nil {
			return nil, offset, false, err
		}
	}
	if err := localCopy(ctx, s, rec); err != nil { // a shared workspace's run made elsewhere
		return nil, offset, false, err
	}
	path := e.toRun(s, rec).LogPath
	b, next, err = readFrom(s.RunDir(rec.ID), s.Dir, path, offset)
	return b, next, rec.Status.Active(), err
}

// readFrom reads at most MaxLogChunk bytes of path from offset, opened
// beneath the run's directory (or, for a log kept elsewhere in the workspace,
// beneath the workspace): a run's files are untrusted input.
func readFrom(runDir, wsDir, path string, offset int64) ([]byte, int64, error) {
	root := runDir
	if !within(runDir, path) {
		root = wsDir
	}
	f, err := run.OpenRunFile(root, path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, offset, nil
	}
	if err != nil {
		return nil, offset, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, offset, err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxLogChunk))
	return b, offset + int64(len(b)), err
}

func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// LiveMetricHistory is MetricHistory, but for an active run whose files are
// on this machine (local, pools) it reads what the script has logged so far.
// An active run on another host has no history until it ends.
func (e *Engine) LiveMetricHistory(ctx context.Context, id string) ([]run.Metric, bool, error) {
	_, rec, err := e.load(ctx, id)
	if err != nil {
		return nil, false, err
	}
	if rec.Status.Active() && rec.RunDir != "" {
		l := supervise.Layout{Dir: rec.RunDir}
		ms, _, err := run.ReadMetricsFile(rec.RunDir, l.Metrics())
		if err == nil && len(ms) > 0 {
			if len(ms) > MaxMetricHistory {
				return ms[:MaxMetricHistory], true, nil
			}
			return ms, false, nil
		}
	}
	return e.MetricHistory(ctx, id)
}

// RunSnapshotFiles is the file list of a run's snapshot (path, mode, size,
// sha256), from the manifest the workspace keeps; nil for runs submitted
// before file lists were kept.
func (e *Engine) RunSnapshotFiles(ctx context.Context, id string) ([]snapshot.Entry, error) {
	s, rec, err := e.load(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.ManifestBlob == "" {
		return nil, nil
	}
	m, err := e.blobs(s).GetManifest(rec.ManifestBlob)
	if err != nil {
		return nil, fmt.Errorf("the file list of run %s cannot be read: %w", rec.ID, err)
	}
	return m.Entries, nil
}

// OpenRunOutput opens one output file of a run for reading: rel is a path as
// listed in the run's output files, checked (relative, no "..", no NUL) and
// opened beneath the run's outputs directory only as a regular file (no link
// out, no FIFO or device). It returns os.ErrNotExist (wrapped) for anything
// else.
func (e *Engine) OpenRunOutput(ctx context.Context, id, rel string) (*os.File, os.FileInfo, error) {
	s, rec, err := e.load(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	name, err := run.DecodeName(rel)
	if err != nil {
		name = rel
	}
	clean, err := snapshot.SanitizeRelPath(name)
	if err != nil {
		return nil, nil, fmt.Errorf("output %q: %v: %w", rel, err, os.ErrNotExist)
	}
	if err := localCopy(ctx, s, rec); err != nil {
		return nil, nil, err
	}
	root := e.toRun(s, rec).OutputsPath
	f, err := run.OpenRunFile(root, filepath.Join(root, filepath.FromSlash(clean)))
	if err != nil {
		if errors.Is(err, run.ErrNotRegular) {
			return nil, nil, fmt.Errorf("%v: %w", err, os.ErrNotExist)
		}
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, st, nil
}
