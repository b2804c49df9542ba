package hostrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
)

// handle is the serialized reference to a run supervised on this host.
type handle struct {
	RunDir          string `json:"run_dir"`
	SupervisorPID   int    `json:"supervisor_pid"`
	SupervisorTicks uint64 `json:"supervisor_ticks"`
}

// Recover re-attaches to a run of this host from the handle Launch returned.
func Recover(raw drivers.Handle) (drivers.Execution, error) {
	var h handle
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("local run handle: %w", err)
	}
	if h.RunDir == "" {
		return nil, errors.New("local run handle has no run directory")
	}
	return &execution{h: h, l: supervise.Layout{Dir: h.RunDir}}, nil
}

// Open is the execution of a run directory on this host whose supervisor (if
// any) recorded itself in the run's status (a pool rank).
func Open(runDir string) drivers.Execution {
	return &execution{h: handle{RunDir: runDir}, l: supervise.Layout{Dir: runDir}}
}

type execution struct {
	h handle
	l supervise.Layout
}

// Status reads the supervisor's status file; a supervisor that died without
// recording an end makes the run Failed/lost (its group is killed first).
func (e *execution) Status(ctx context.Context) (drivers.State, error) {
	st, err := supervise.ReadStatus(e.l)
	if err != nil {
		return drivers.State{}, err
	}
	if st == nil {
		return drivers.State{Status: run.Failed, FailureReason: run.ReasonLost, Message: "run directory has no status; it was removed or never started"}, nil
	}
	if st.Status.Terminal() {
		return st.State, nil
	}
	pid, ticks := e.h.SupervisorPID, e.h.SupervisorTicks
	if st.SupervisorPID != 0 {
		pid, ticks = st.SupervisorPID, st.SupervisorTicks
	}
	if supervise.ProcessAlive(pid, ticks) {
		return st.State, nil
	}
	// Re-read: the supervisor may have finished between the two reads.
	if again, err := supervise.ReadStatus(e.l); err == nil && again != nil && again.Status.Terminal() {
		return again.State, nil
	}
	if st.ChildPID > 0 {
		_ = supervise.KillGroup(st.ChildPID, syscall.SIGKILL)
	}
	if st.Container != "" {
		supervise.ReapContainer(e.l.Dir)
	}
	now := time.Now().UTC()
	st.Status, st.FailureReason, st.EndTime = run.Failed, run.ReasonLost, &now
	st.Message = fmt.Sprintf("the run's supervisor (pid %d) is gone without recording a result", pid)
	_ = supervise.WriteJSONAtomic(e.l.Status(), st)
	return st.State, nil
}

// Wait returns when the status file records an end. Where the host can say when
// the supervisor renames a new status into place (inotify, see wait_linux.go) it
// wakes on that, and checks every waitCheck besides (a supervisor that dies
// without recording an end is found by Status); elsewhere it polls, quickly at
// first, then every waitCheck.
func (e *execution) Wait(ctx context.Context) (drivers.State, error) {
	w, err := supervise.WatchStatus(e.l.Status())
	if err != nil {
		return drivers.Poll(ctx, 20*time.Millisecond, waitCheck, e.Status)
	}
	defer w.Close()
	return drivers.WaitWoken(ctx, w.C, waitCheck, e.Status)
}

// waitCheck is how often Wait looks at a run with no news from its supervisor.
const waitCheck = 500 * time.Millisecond

func (e *execution) Logs(ctx context.Context, offset int64) ([]byte, int64, error) {
	f, err := run.OpenRunFile(e.l.Dir, e.l.StdLog())
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
	b, err := io.ReadAll(io.LimitReader(f, 4<<20))
	return b, offset + int64(len(b)), err
}

// Cancel asks the supervisor to stop the run; if the supervisor is gone it stops
// the group itself.
func (e *execution) Cancel(ctx context.Context, grace time.Duration, reason string) error {
	st, err := supervise.ReadStatus(e.l)
	if err != nil || st == nil || st.Status.Terminal() {
		return err
	}
	if err := supervise.WriteJSONAtomic(e.l.CancelReq(), supervise.CancelRequest{GraceSec: grace.Seconds(), Reason: reason, At: time.Now().UTC()}); err != nil {
		return err
	}
	pid, ticks := st.SupervisorPID, st.SupervisorTicks
	if pid == 0 {
		pid, ticks = e.h.SupervisorPID, e.h.SupervisorTicks
	}
	if supervise.ProcessAlive(pid, ticks) {
		return syscall.Kill(pid, syscall.SIGTERM)
	}
	if st.ChildPID > 0 {
		_ = supervise.KillGroup(st.ChildPID, syscall.SIGTERM)
		deadline := time.Now().Add(grace)
		for supervise.GroupAlive(st.ChildPID) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		_ = supervise.KillGroup(st.ChildPID, syscall.SIGKILL)
	}
	if st.Container != "" {
		supervise.ReapContainer(e.l.Dir)
	}
	now := time.Now().UTC()
	st.Status, st.FailureReason, st.EndTime = run.Canceled, reason, &now
	return supervise.WriteJSONAtomic(e.l.Status(), st)
}

// Collect reads metrics, the output listing and the log tail. What the script
// left in their place that cannot be read (a FIFO, a device, a link out of the
// run directory, an unreadable line) is reported in Warnings and collection
// goes on.
func (e *execution) Collect(ctx context.Context) (drivers.Collected, error) {
	c := drivers.Collected{OutputsPath: e.l.Outputs(), LogPath: e.l.StdLog()}
	ms, dropped, err := run.ReadMetricsFile(e.l.Dir, e.l.Metrics())
	c.Metrics = ms
	if err != nil {
		c.Warnings = append(c.Warnings, fmt.Sprintf("metrics not read: %v", err))
	}
	if dropped > 0 {
		c.Warnings = append(c.Warnings, fmt.Sprintf("%d metrics line(s) dropped (malformed, over %d bytes, no name, or a value that is null, NaN or infinite)", dropped, run.MaxMetricLineBytes))
	}
	e.collectLogged(&c)
	if c.OutputFiles, err = ListFiles(e.l.Outputs()); err != nil {
		c.Warnings = append(c.Warnings, fmt.Sprintf("outputs not listed: %v", err))
	}
	if c.LogTail, err = run.TailLines(e.l.Dir, e.l.StdLog(), drivers.LogTailLines, 64<<10); err != nil {
		c.Warnings = append(c.Warnings, fmt.Sprintf("log not read: %v", err))
	}
	if st, err := supervise.ReadStatus(e.l); err == nil && st != nil && st.Status.Terminal() && st.Status != run.Completed {
		// A Python failure's traceback may have scrolled out of the tail
		// (a framework logging its shutdown after it, for one).
		if tail, err := run.TailLines(e.l.Dir, e.l.StdLog(), 2000, 256<<10); err == nil {
			c.Traceback = run.LastTraceback(tail)
		}
	}
	return c, nil
}

// ListFiles lists the files under dir as sorted slash paths, each shown with
// run.EncodeName (names a script makes may be any bytes): regular files, and
// links that resolve to a regular file inside dir (a remote driver brings them
// back as copies). Anything else (FIFOs, devices, links out) is left out.
func ListFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && p == dir {
				return filepath.SkipDir
			}
			return err
		}
		if de.IsDir() {
			return nil
		}
		if p == dir {
			return nil // dir itself is a link: nothing inside to list
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if de.Type()&fs.ModeSymlink != 0 {
			f, err := run.OpenRunFile(dir, p)
			if err != nil {
				return nil
			}
			f.Close()
		} else if !de.Type().IsRegular() {
			return nil
		}
		clean, err := snapshot.SanitizeRelPath(filepath.ToSlash(rel))
		if err != nil {
			return nil
		}
		out = append(out, run.EncodeName(clean))
		return nil
	})
	sort.Strings(out)
	return out, err
}

// collectLogged adds what the script logged through its tags file and MLflow
// (with no tracking of its own: the store MLflowVars pointed it at): MLflow's
// metrics after the aml_run ones, its params and tags, and its artifacts moved
// into outputs/.
func (e *execution) collectLogged(c *drivers.Collected) {
	var tags run.KeyValues
	if err := run.ReadTagsFile(e.l.Dir, e.l.Tags(), &tags); err != nil {
		c.Warnings = append(c.Warnings, fmt.Sprintf("tags not read: %v", err))
	}
	ml, err := run.ReadMLflowStore(e.l.Dir, e.l.MLflowStore())
	if err != nil {
		c.Warnings = append(c.Warnings, fmt.Sprintf("MLflow store not read: %v", err))
	}
	if ml != nil {
		c.Metrics = append(c.Metrics, ml.Metrics...)
		c.Warnings = append(c.Warnings, ml.Warnings...)
		if ml.Dropped > 0 {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%d MLflow metric value(s) dropped (malformed, NaN or infinite, or past the bounds)", ml.Dropped))
		}
		for _, k := range run.SortedKeys(ml.Tags.Values) {
			tags.Set(k, ml.Tags.Values[k])
		}
		tags.Dropped += ml.Tags.Dropped
		c.Params = ml.Params.Values
		if ml.Params.Dropped > 0 {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%d MLflow param(s) not kept (over %d, or a key over %d bytes)", ml.Params.Dropped, run.MaxKeyValues, run.MaxKeyBytes))
		}
		for _, dir := range ml.ArtifactDirs {
			c.Warnings = append(c.Warnings, moveArtifacts(dir, e.l.Outputs())...)
		}
	}
	c.Tags = tags.Values
	if tags.Dropped > 0 {
		c.Warnings = append(c.Warnings, fmt.Sprintf("%d tag(s) not kept (malformed, over %d, or a key over %d bytes)", tags.Dropped, run.MaxKeyValues, run.MaxKeyBytes))
	}
}

// moveArtifacts moves the entries of an MLflow run's artifacts directory into
// outputs (same file system: a rename, nothing copied). An entry whose name is
// already taken in outputs stays where it is, with a warning. Both
// directories must be real directories, not links (checked by the caller for
// dir, here for outputs), so nothing outside the run directory is moved.
func moveArtifacts(dir, outputs string) []string {
	var warnings []string
	st, err := os.Lstat(outputs)
	if err != nil || !st.IsDir() {
		return []string{fmt.Sprintf("MLflow artifacts in %s not moved: %s is not a directory", dir, outputs)}
	}
	var move func(src, dst string, depth int)
	move = func(src, dst string, depth int) {
		entries, err := os.ReadDir(src)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("MLflow artifacts in %s not moved: %v", src, err))
			return
		}
		for _, de := range entries {
			s, d := filepath.Join(src, de.Name()), filepath.Join(dst, de.Name())
			dst, err := os.Lstat(d)
			switch {
			case errors.Is(err, os.ErrNotExist):
				if err := os.Rename(s, d); err != nil {
					warnings = append(warnings, fmt.Sprintf("MLflow artifact %s not moved: %v", s, err))
				}
			case err == nil && dst.IsDir() && de.IsDir() && depth < 32:
				move(s, d, depth+1) // merge into a directory the script made
			default:
				warnings = append(warnings, fmt.Sprintf("MLflow artifact %s left in place: %s already exists", s, d))
			}
		}
	}
	move(dir, outputs, 0)
	return warnings
}

// FileWatch wakes C (at most one pending signal) when one of the watched files
// is written and closed or renamed into place; see WatchFiles.
type FileWatch struct{ w *supervise.StatusWatch }

// C is ready after a watched file changed.
func (w *FileWatch) C() <-chan struct{} { return w.w.C }

// Close stops the watch.
func (w *FileWatch) Close() error { return w.w.Close() }

// WatchFiles watches files (their directories must exist) for the writes that
// the supervisor's status updates and a pool's queue bell make. It fails where
// the OS has no such notification (then callers poll).
func WatchFiles(paths ...string) (*FileWatch, error) {
	w, err := supervise.WatchStatus(paths...)
	if err != nil {
		return nil, err
	}
	return &FileWatch{w}, nil
}

// WatchRunStatus is WatchFiles on the status files of run directories.
func WatchRunStatus(dirs ...string) (*FileWatch, error) {
	paths := make([]string, len(dirs))
	for i, d := range dirs {
		paths[i] = supervise.Layout{Dir: d}.Status()
	}
	return WatchFiles(paths...)
}
