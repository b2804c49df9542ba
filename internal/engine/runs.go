package engine

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
)

// LocalTarget is the reserved name of the machine running Terraform.
const LocalTarget = "local"

const runSep = "/runs/"

// ErrSourceChanged means the source tree differs from what the plan hashed.
var ErrSourceChanged = errors.New("source changed since plan; run plan again")

// RunRequest is one aml_experiment_run as configured.
type RunRequest struct {
	WorkspaceID          string
	Experiment           string
	SourceDirectory      string
	Script               string
	Command              []string
	Arguments            []string
	ComputeTarget        string
	RunConfigID          string
	EnvironmentVariables map[string]string
	Tags                 map[string]string
	Triggers             map[string]string
	// RunBased, with ComputeTarget "amlcompute", is the pool created for this
	// run alone and deleted after it.
	RunBased *RunBasedCompute
	// PlannedSnapshotHash, when set, must equal the hash at submit time.
	PlannedSnapshotHash string
	// Waited says the caller waits for the run next (WaitRun): SubmitRun
	// then returns it as started, without the one observation it makes for
	// a run nobody waits for. Not part of the submission.
	Waited bool
}

// Run is a run as reported to users.
type Run struct {
	ID            string // "<workspace_id>/runs/<run_id>"
	RunID         string
	WorkspaceID   string
	Experiment    string
	ComputeTarget string
	RunConfigName string
	Status        run.Status
	FailureReason string
	Message       string
	ExitCode      *int
	CreatedAt     time.Time // when it was submitted (queued)
	// Phases is when the run entered each status (see run.Record.Phases).
	Phases          map[run.Status]time.Time
	StartTime       *time.Time
	EndTime         *time.Time
	DurationSeconds float64
	Metrics         map[string]float64
	OutputFiles     []string
	OutputsPath     string
	// OutputsURI and LogsURI name where any machine finds the run's files:
	// s3://bucket/prefix/<workspace uuid>/runs/<run id>/outputs/ on a shared
	// workspace, file:///<workspace>/runs/<run id>/outputs/ on an embedded one.
	OutputsURI      string
	LogsURI         string
	LogTail         string
	LogPath         string
	SnapshotHash    string
	SnapshotFiles   int
	SnapshotBytes   int64
	EnvironmentHash string
	// EnvironmentCacheHit and EnvironmentBuildSeconds are nil for user-managed
	// environments and until a system-managed one is ready.
	EnvironmentCacheHit     *bool
	EnvironmentBuildSeconds *float64
	Tags                    map[string]string
	// Params and ScriptTags are what the script logged itself (MLflow params
	// and tags; Run.tag of azureml.core and aml_run).
	Params     map[string]string
	ScriptTags map[string]string

	SourceDirectory      string
	Script               string
	Command              []string
	Arguments            []string
	EnvironmentVariables map[string]string
	Triggers             map[string]string
	RunConfigID          string
	// Adopted is true when SubmitRun found this run already submitted by an
	// interrupted apply instead of starting a new one.
	Adopted bool
	// Details are what the target's kind knows of the run (e.g.
	// "spark_application_id").
	Details map[string]string
	// Traceback is the last Python traceback of a failed run's log.
	Traceback string
	// OutputsGone is true when the outputs directory of a finished run was
	// removed outside Terraform (OutputFiles is then empty).
	OutputsGone bool
}

// errNotCollected marks an observation of a run that has not ended yet.
var errNotCollected = errors.New("not collected: the run has not ended")

// What state keeps of a run's results (the workspace keeps them all).
const (
	MaxStateMetrics     = 1000
	MaxStateOutputFiles = 1000
)

// FirstMetrics is the metrics whose names sort first, at most n of them.
func FirstMetrics(m map[string]float64, n int) map[string]float64 {
	if len(m) <= n {
		return m
	}
	names := run.SortedKeys(m)[:n]
	out := make(map[string]float64, n)
	for _, k := range names {
		out[k] = m[k]
	}
	return out
}

// inWorkspace keeps a path under the workspace relative to it, so a record
// does not tie the workspace to where this machine keeps it.
func inWorkspace(ws, p string) string {
	if rel, err := filepath.Rel(ws, p); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return filepath.ToSlash(rel)
	}
	return p
}

// fromWorkspace resolves a path inWorkspace kept.
func fromWorkspace(ws, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(ws, filepath.FromSlash(p))
}

// noticeOutputsGone flags a finished run whose outputs directory was removed
// outside Terraform: its output files are no longer there. The run is not
// re-executed for it; the record keeps the history.
func noticeOutputsGone(r *Run) {
	if len(r.OutputFiles) == 0 || r.OutputsPath == "" {
		return
	}
	if _, err := os.Stat(r.OutputsPath); errors.Is(err, os.ErrNotExist) {
		r.OutputsGone = true
		r.OutputFiles = []string{}
	}
}

// RunFailedError is returned by WaitRun for a run that did not complete.
type RunFailedError struct{ Run *Run }

func (e *RunFailedError) Error() string {
	r := e.Run
	msg := fmt.Sprintf("run %s ended %s", r.RunID, r.Status)
	if r.FailureReason != "" {
		msg += " (" + r.FailureReason
		if r.ExitCode != nil {
			msg += fmt.Sprintf(", exit code %d", *r.ExitCode)
		}
		msg += ")"
	}
	if r.Message != "" {
		msg += ": " + r.Message
	}
	if tb := strings.TrimSpace(r.Traceback); tb != "" && !strings.Contains(r.LogTail, tb) {
		msg += "\n\nPython traceback (from " + r.LogPath + "):\n" + r.Traceback
	}
	if strings.TrimSpace(r.LogTail) != "" {
		msg += "\n\nLast lines of " + r.LogPath + ":\n" + r.LogTail
	}
	return msg
}

// ParseRunID splits "<workspace_id>/runs/<run_id>".
func ParseRunID(id string) (workspaceID, runID string, err error) {
	return parseChildID(id, runSep, NamePattern, "run id", "{run_id}")
}

// SnapshotSummary is what a plan shows about a source directory.
type SnapshotSummary struct {
	Hash  string
	Files int
	Bytes int64
}

func (e *Engine) snapshotOptions() snapshot.Options {
	return snapshot.Options{Limits: e.opts.SnapshotLimits, StatCacheDir: e.opts.StatCacheDir}
}

// PlanSnapshot hashes a source directory for the plan (stat-cached, so re-plans of
// an unchanged tree read no file contents; and memoized while inotify reports no
// change, so the runs of one plan that share a directory walk it once). The
// manifest is shared: it must not be modified.
func (e *Engine) PlanSnapshot(ctx context.Context, dir string) (*SnapshotSummary, *snapshot.Manifest, error) {
	m, err := e.snapshots.Build(ctx, e.abs(dir), e.snapshotOptions())
	if err != nil {
		return nil, nil, fieldErr("source_directory", "%v", err)
	}
	return &SnapshotSummary{Hash: m.Hash, Files: m.Files, Bytes: m.Bytes}, m, nil
}

// MaxPlanChanges bounds the files a plan lists as changed (the rest is a count).
const MaxPlanChanges = 20

// SnapshotChangesSinceLast lists the files of manifest m that differ from the
// snapshot of the last run of the same submission in the workspace (same
// experiment, source_directory, script or command, arguments, target, run
// configuration, variables and triggers; the snapshot aside): "changed:
// train.py", "added: ...", "removed: ...", the first MaxPlanChanges in path
// order, then one line with how many more. No such run: none. A run whose
// file list was not kept (submitted by an earlier provider version) gets one
// line saying so. It reads the store only, so plan and apply agree.
func (e *Engine) SnapshotChangesSinceLast(ctx context.Context, req RunRequest, m *snapshot.Manifest) ([]string, error) {
	s, err := e.open(ctx, req.WorkspaceID)
	if err != nil {
		return nil, err
	}
	_, rcName, _ := ParseRunConfigID(req.RunConfigID)
	last, err := s.LastRunOfSubmission(ctx, req.Experiment, submissionOf(req, rcName))
	if err != nil {
		return nil, err
	}
	if last != nil && !sameSubmission(last, req, rcName) {
		last = nil // a hash collision: never taken for the same submission
	}
	if last == nil {
		// Runs of earlier versions carry no submission: look through those.
		recs, err := s.ListRuns(ctx, store.RunFilter{Experiment: req.Experiment, Unkeyed: true})
		if err != nil {
			return nil, err
		}
		for i := len(recs) - 1; i >= 0; i-- {
			if r := recs[i]; sameSubmission(r, req, rcName) {
				last = r
				break
			}
		}
	}
	if last == nil || last.SnapshotHash == m.Hash {
		return []string{}, nil
	}
	if last.ManifestBlob == "" {
		return []string{"unknown: the file list of run " + last.ID + " was not kept (it was submitted by an earlier provider version)"}, nil
	}
	// Another machine may have made that run: its manifest is in the bucket.
	_ = s.FetchBlobs(ctx, []string{last.ManifestBlob})
	old, err := e.blobs(s).GetManifest(last.ManifestBlob)
	if err != nil {
		return []string{fmt.Sprintf("unknown: the file list of run %s cannot be read: %v", last.ID, err)}, nil
	}
	return changeLines(snapshot.Diff(old, m)), nil
}

// sameSubmission reports whether a run record was submitted with req's
// inputs, its snapshot aside.
func sameSubmission(r *run.Record, req RunRequest, rcName string) bool {
	return r.Experiment == req.Experiment && r.SourceDirectory == req.SourceDirectory && r.Script == req.Script &&
		slices.Equal(r.Command, req.Command) && slices.Equal(r.Arguments, req.Arguments) && r.Target == req.ComputeTarget &&
		r.RunConfig == rcName && maps.Equal(r.EnvironmentVariables, req.EnvironmentVariables) && maps.Equal(r.Triggers, req.Triggers)
}

// submissionOf hashes what sameSubmission compares, so the store finds the last
// run of a submission by an index (run.Record.Submission).
func submissionOf(req RunRequest, rcName string) string {
	norm := func(v []string) []string {
		if len(v) == 0 {
			return nil
		}
		return v
	}
	normMap := func(m map[string]string) map[string]string {
		if len(m) == 0 {
			return nil
		}
		return m
	}
	b, _ := json.Marshal([]any{req.Experiment, req.SourceDirectory, req.Script, norm(req.Command), norm(req.Arguments),
		req.ComputeTarget, rcName, normMap(req.EnvironmentVariables), normMap(req.Triggers)})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func changeLines(changes []snapshot.Change) []string {
	out := make([]string, 0, min(len(changes), MaxPlanChanges)+1)
	for i, c := range changes {
		if i == MaxPlanChanges {
			counts := map[string]int{}
			for _, c := range changes[i:] {
				counts[c.Kind]++
			}
			out = append(out, fmt.Sprintf("... and %d more (%d added, %d changed, %d removed)", len(changes)-i, counts["added"], counts["changed"], counts["removed"]))
			break
		}
		out = append(out, c.Kind+": "+run.EncodeName(c.Path))
	}
	return out
}

// CheckScript verifies the script is part of a manifest.
func CheckScript(m *snapshot.Manifest, dir, script string) error {
	clean, err := snapshot.SanitizeRelPath(filepath.ToSlash(script))
	if err != nil {
		return fieldErr("script", "%q must be a relative path inside source_directory: %v", script, err)
	}
	if _, ok := m.Lookup(clean); !ok {
		return fieldErr("script", "%q is not in the snapshot of %s (missing, or excluded by .amlignore/.gitignore)", script, dir)
	}
	return nil
}

// SubmitRun snapshots the source, starts the run on its target and returns at
// once (see WaitRun). A run with the same submission that an interrupted apply
// left behind is adopted instead of started again.
func (e *Engine) SubmitRun(ctx context.Context, req RunRequest) (*Run, error) {
	sub, err := e.validateSubmission(ctx, req)
	if err != nil {
		return nil, err
	}
	if r, err := e.adopt(ctx, sub); r != nil || err != nil {
		return r, err
	}
	if testHookSubmit != nil {
		testHookSubmit(sub.srcDir)
	}
	if ss, ok := sub.drv.(drivers.SourceStreamer); ok && ss.StreamsSource() && req.ComputeTarget != RunBasedTarget {
		return e.submitStreaming(ctx, sub)
	}
	rec, err := e.stage(ctx, sub)
	if err != nil {
		return nil, err
	}
	return e.start(ctx, sub, rec, nil)
}

// testHookSubmit, when set (tests), is called with the source directory once
// a submission has been validated, before its snapshot is stored or sent.
var testHookSubmit func(srcDir string)

// submitStreaming is SubmitRun for a driver that sends the snapshot from the
// source directory (drivers.SourceStreamer): the snapshot is stored in the
// workspace while the driver sends it, and the run is recorded (NotStarted)
// once both the store and the send are done, before the driver launches
// anything (RunSpec.Ready). So, as in stage then start: a source that changed
// records nothing and fails with ErrSourceChanged naming source_directory,
// and a run that runs is always recorded first (adoption finds it).
func (e *Engine) submitStreaming(ctx context.Context, sub *submission) (*Run, error) {
	ictx, stopIngest := context.WithCancel(ctx)
	defer stopIngest()
	stored := make(chan error, 1)
	var manifestBlob string
	go func() {
		var err error
		manifestBlob, err = e.storeSnapshot(ictx, sub)
		stored <- err
	}()
	var (
		storeErr error
		waited   bool
		called   bool
	)
	wait := func(rctx context.Context) error {
		if !waited {
			select {
			case storeErr = <-stored:
			case <-rctx.Done():
				stopIngest()
				<-stored
				storeErr = rctx.Err()
			}
			waited = true
		}
		return storeErr
	}
	ready := func(rctx context.Context, id string) (*run.Record, error) {
		if called {
			return nil, errors.New("engine: a driver called Ready twice")
		}
		called = true
		if err := wait(rctx); err != nil {
			return nil, err
		}
		return e.recordRun(ctx, sub, manifestBlob, id)
	}
	r, err := e.start(ctx, sub, nil, ready)
	if called {
		// Recorded (then r, err are start's), or Ready failed (err is its
		// error, or wraps it: storing the snapshot or recording the run
		// failed, and nothing was launched).
		if storeErr != nil {
			return nil, storeErr
		}
		return r, err
	}
	// The driver failed before it had sent everything: nothing was recorded
	// or launched. Say why as stage then start would have: the store's
	// error first, then a source that changed under the driver; any other
	// failure is a recorded run that failed to start.
	if serr := wait(ctx); serr != nil {
		return nil, serr
	}
	if errors.Is(err, snapshot.ErrSourceChanged) {
		return nil, fieldErr("source_directory", "%v; run plan again", err)
	}
	rec, rerr := e.recordRun(ctx, sub, manifestBlob, "")
	if rerr != nil {
		return nil, errors.Join(err, rerr)
	}
	return e.failStart(ctx, sub, rec, err)
}

// submission is a validated run request with everything needed to start it.
type submission struct {
	req      RunRequest
	s        *store.Store
	rc       *RunConfig
	drv      drivers.Driver
	srcDir   string
	sum      *SnapshotSummary
	manifest *snapshot.Manifest
	launch   env.Launch
	key      string
}

// validateSubmission checks a request against its workspace, run
// configuration, target and source tree; nothing is written.
func (e *Engine) validateSubmission(ctx context.Context, req RunRequest) (*submission, error) {
	s, err := e.open(ctx, req.WorkspaceID)
	if err != nil {
		return nil, fieldErr("workspace_id", "%v", err)
	}
	if !NamePattern.MatchString(req.Experiment) {
		return nil, fieldErr("experiment_name", "%q is not a valid experiment name: use up to 128 letters, digits, '.', '-' or '_', starting with a letter or digit", req.Experiment)
	}
	rcWS, _, err := ParseRunConfigID(req.RunConfigID)
	if err != nil {
		return nil, fieldErr("run_configuration_id", "%v", err)
	}
	if rcS, err := e.open(ctx, rcWS); err != nil || rcS != s {
		return nil, fieldErr("run_configuration_id", "%q belongs to workspace %s, not to this run's workspace %s", req.RunConfigID, rcWS, s.UID)
	}
	rc, err := e.ReadRunConfig(ctx, req.RunConfigID)
	if err != nil {
		return nil, fieldErr("run_configuration_id", "%v", err)
	}
	sub := &submission{req: req, s: s, rc: rc}
	if req.ComputeTarget == RunBasedTarget {
		if err := checkRunBased(req.RunBased, rc.Spec.NodeCount); err != nil {
			return nil, err
		}
		// The run's own pool is created once nothing can fail first; its
		// nodes run on this machine, which prepares the environment.
		sub.drv, err = e.driverFor(ctx, s, LocalTarget)
	} else {
		if req.RunBased != nil {
			return nil, fieldErr("run_based_compute", "is only used with compute_target = %q", RunBasedTarget)
		}
		if sub.drv, err = e.driverFor(ctx, s, req.ComputeTarget); err == nil {
			err = checkFits(ctx, sub.drv, "run_configuration_id", rc.Spec, req.ComputeTarget)
		}
	}
	if err != nil {
		return nil, err
	}
	if (req.Script == "") == (len(req.Command) == 0) {
		return nil, fieldErr("script", "exactly one of script or command must be set")
	}
	if err := CheckProgram(req.Script, req.Command, req.Arguments, req.EnvironmentVariables); err != nil {
		return nil, err
	}
	// The target answers how it provides the environment (a session on an
	// SSH host, which may connect first) while the source is hashed; its
	// error comes after the snapshot's, as if asked second.
	type prepared struct {
		launch env.Launch
		err    error
	}
	pctx, stopPrepare := context.WithCancel(ctx)
	prep := make(chan prepared, 1)
	go func() {
		l, err := sub.drv.PrepareEnvironment(pctx, rc.Spec.Environment)
		prep <- prepared{l, err}
	}()
	defer func() {
		stopPrepare()
		<-prep // nothing runs on after the submission is validated (or not)
	}()
	sub.srcDir = e.abs(req.SourceDirectory)
	if sub.sum, sub.manifest, err = e.PlanSnapshot(ctx, sub.srcDir); err != nil {
		return nil, err
	}
	if req.PlannedSnapshotHash != "" && req.PlannedSnapshotHash != sub.sum.Hash {
		return nil, fieldErr("source_directory", "%s: %v (planned %s, now %s)", sub.srcDir, ErrSourceChanged, req.PlannedSnapshotHash, sub.sum.Hash)
	}
	if req.Script != "" {
		if err := CheckScript(sub.manifest, sub.srcDir, req.Script); err != nil {
			return nil, err
		}
	}
	p := <-prep
	prep <- p // for the deferred receive
	if sub.launch, err = p.launch, p.err; err != nil {
		var fe *FieldError
		if !errors.As(err, &fe) {
			return nil, fmt.Errorf("compute target %q: %w", req.ComputeTarget, err)
		}
		// The fault is in the run configuration: say which, and where in it.
		return nil, fieldErr("run_configuration_id", "run configuration %q cannot run on target %q: %v", rc.Spec.Name, req.ComputeTarget, err)
	}
	sub.key = submitKey(s.UID, sub.sum.Hash, req, rc)
	return sub, nil
}

// adopt returns the run an interrupted apply left behind for the same
// submission, if any (nil, nil: submit a new one).
func (e *Engine) adopt(ctx context.Context, sub *submission) (*Run, error) {
	s := sub.s
	rec, err := s.ClaimOrphan(ctx, sub.key, e.owner, ownerAlive)
	if err != nil || rec == nil {
		return nil, err
	}
	if len(rec.Handle) > 0 {
		r, err := e.refresh(ctx, s, rec)
		if err == nil {
			r.Adopted = true
		}
		return r, err
	}
	// Killed between recording and starting: nothing runs; close it out.
	_, _ = s.UpdateRun(ctx, rec.ID, func(r *run.Record) error {
		r.Status, r.FailureReason, r.Error = run.Failed, run.ReasonLost, "submission was interrupted before the run started"
		return nil
	})
	_ = s.MarkReleased(ctx, rec.ID)
	return nil, nil
}

// stage stores the snapshot's blobs and records the new run (NotStarted).
func (e *Engine) stage(ctx context.Context, sub *submission) (*run.Record, error) {
	manifestBlob, err := e.storeSnapshot(ctx, sub)
	if err != nil {
		return nil, err
	}
	return e.recordRun(ctx, sub, manifestBlob, "")
}

// storeSnapshot stores the snapshot's blobs and manifest in the workspace and
// returns the manifest's blob.
func (e *Engine) storeSnapshot(ctx context.Context, sub *submission) (string, error) {
	s := sub.s
	if err := e.blobs(s).Ingest(ctx, sub.srcDir, sub.manifest); err != nil {
		if errors.Is(err, snapshot.ErrSourceChanged) {
			return "", fieldErr("source_directory", "%v; run plan again", err)
		}
		return "", fmt.Errorf("storing snapshot: %w", err)
	}
	manifestBlob, err := e.blobs(s).PutManifest(sub.manifest)
	if err != nil {
		return "", fmt.Errorf("storing snapshot manifest: %w", err)
	}
	if err := pushSnapshot(ctx, s, sub.manifest, manifestBlob); err != nil {
		return "", err
	}
	return manifestBlob, nil
}

// recordRun records the new run (NotStarted) of a stored snapshot, under id
// ("": a new one).
func (e *Engine) recordRun(ctx context.Context, sub *submission, manifestBlob, id string) (*run.Record, error) {
	s, req, rc := sub.s, sub.req, sub.rc
	now := time.Now().UTC()
	if id == "" {
		id = newRunID(req.Experiment, now)
	}
	rec := &run.Record{
		ID:              id,
		Experiment:      req.Experiment,
		Target:          req.ComputeTarget,
		RunConfig:       rc.Spec.Name,
		Host:            thisHost(),
		SubmitKey:       sub.key,
		Submission:      submissionOf(req, rc.Spec.Name),
		Status:          run.NotStarted,
		CreatedAt:       now,
		SnapshotHash:    sub.sum.Hash,
		SnapshotFiles:   sub.sum.Files,
		SnapshotBytes:   sub.sum.Bytes,
		ManifestBlob:    manifestBlob,
		Tags:            req.Tags,
		EnvironmentHash: rc.EnvironmentHash,

		SourceDirectory:      req.SourceDirectory,
		Script:               req.Script,
		Command:              req.Command,
		Arguments:            req.Arguments,
		EnvironmentVariables: req.EnvironmentVariables,
		Triggers:             req.Triggers,
	}
	rec.RunDir = s.RunDir(rec.ID)
	if req.ComputeTarget == RunBasedTarget {
		var err error
		if rec.Pool, sub.drv, err = e.createRunBasedPool(ctx, s, rec.ID, *req.RunBased); err != nil {
			return nil, err
		}
	}
	if err := s.InsertRun(ctx, rec, e.owner); err != nil {
		return nil, err
	}
	return rec, nil
}

// start hands the recorded run to its driver and keeps the handle. With ready
// (submitStreaming), the run is not recorded yet: rec is nil, the driver reads
// the source directory and calls ready, which records the run, before it
// launches.
func (e *Engine) start(ctx context.Context, sub *submission, rec *run.Record, ready func(ctx context.Context, id string) (*run.Record, error)) (*Run, error) {
	s, req, rc := sub.s, sub.req, sub.rc
	vars := map[string]string{}
	for k, v := range rc.Spec.EnvironmentVariables {
		vars[k] = v
	}
	for k, v := range req.EnvironmentVariables {
		vars[k] = v
	}
	spec := drivers.RunSpec{
		Manifest:    sub.manifest,
		Blobs:       e.blobs(s),
		Program:     drivers.Program{Script: req.Script, Command: req.Command, Arguments: req.Arguments},
		Experiment:  req.Experiment,
		Framework:   rc.Spec.Framework,
		SparkConf:   sparkConf(rc.Spec),
		Slurm:       slurmJSON(rc.Spec),
		Launch:      sub.launch,
		Env:         vars,
		NodeCount:   rc.Spec.NodeCount,
		MaxDuration: time.Duration(rc.Spec.MaxRunDurationSeconds) * time.Second,
		Grace:       e.opts.CancelGrace,
	}
	if ready != nil {
		// The run id is chosen now; ready records the run under it.
		spec.RunID, spec.SourceDir = newRunID(req.Experiment, time.Now().UTC()), sub.srcDir
		spec.Ready = func(rctx context.Context) error {
			r, err := ready(rctx, spec.RunID)
			if err == nil {
				rec = r
			}
			return err
		}
	} else {
		spec.RunID = rec.ID
	}
	h, err := sub.drv.Start(ctx, spec)
	if rec == nil {
		// Not recorded (the driver failed before it called Ready, or Ready
		// failed): submitStreaming says why.
		if err == nil {
			err = errors.New("engine: the driver started a run without calling Ready")
		}
		return nil, err
	}
	if err != nil {
		return e.failStart(ctx, sub, rec, err)
	}
	started, err := s.UpdateRun(ctx, rec.ID, func(r *run.Record) error {
		r.Handle = h
		r.Status = run.Starting
		return nil
	})
	if err != nil {
		// The store failed (a shared backend's server went away): without
		// its handle recorded nobody could follow the run, so stop it. The
		// record stays NotStarted, and the next apply closes it out as an
		// interrupted submission and starts the run again.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.opts.CancelGrace+15*time.Second)
		defer cancel()
		if ex, rerr := sub.drv.Recover(cctx, h); rerr == nil {
			_ = ex.Cancel(cctx, e.opts.CancelGrace, run.ReasonCanceled)
		}
		return nil, fmt.Errorf("run %s was started but could not be recorded, so it was stopped: %w", rec.ID, err)
	}
	rec = started
	// One observation at once: a run that is not waited for still shows where
	// it is (Queued with the scheduler's reason, a batch job's id).
	if !req.Waited {
		if r, err := e.refresh(ctx, s, rec); err == nil {
			return r, nil
		}
	}
	return e.toRun(s, rec), nil
}

// failStart records that a recorded run could not be started.
func (e *Engine) failStart(ctx context.Context, sub *submission, rec *run.Record, err error) (*Run, error) {
	s := sub.s
	if rec.Pool != "" {
		_ = e.DeleteCompute(context.WithoutCancel(ctx), TargetID(s.UID, rec.Pool), true)
	}
	failed, uerr := s.UpdateRun(ctx, rec.ID, func(r *run.Record) error {
		r.Status, r.FailureReason, r.Error = run.Failed, run.ReasonSetupFailed, run.SanitizeText(err.Error())
		end := time.Now().UTC()
		r.EndTime = &end
		return nil
	})
	if uerr != nil {
		return nil, errors.Join(err, uerr)
	}
	return e.toRun(s, failed), &RunFailedError{Run: e.toRun(s, failed)}
}

func slurmJSON(rc RunConfigSpec) json.RawMessage {
	if rc.Slurm == nil {
		return nil
	}
	b, _ := json.Marshal(rc.Slurm)
	return b
}

func sparkConf(rc RunConfigSpec) map[string]string {
	if rc.Spark == nil {
		return nil
	}
	return rc.Spark.Configuration
}

func (e *Engine) blobs(s *store.Store) snapshot.BlobStore {
	return snapshot.BlobStore{Root: s.BlobsPath()}
}

// submitKey identifies "the same submission": same workspace, code, command,
// target, configuration and inputs.
func submitKey(ws, snapshotHash string, req RunRequest, rc *RunConfig) string {
	spec, _ := json.Marshal(rc.Spec)
	k, _ := json.Marshal(struct {
		WS, Experiment, Snapshot, Script, Target, RC string
		Cmd, Args                                    []string
		Env, Tags, Triggers                          map[string]string
		Spec                                         json.RawMessage
	}{ws, req.Experiment, snapshotHash, req.Script, req.ComputeTarget, req.RunConfigID,
		req.Command, req.Arguments, req.EnvironmentVariables, req.Tags, req.Triggers, spec})
	sum := sha256.Sum256(k)
	return hex.EncodeToString(sum[:])
}

func newRunID(experiment string, t time.Time) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s_%d_%s", experiment, t.Unix(), hex.EncodeToString(b))
}

// ReadRun returns a run, observing its target only while it is active.
func (e *Engine) ReadRun(ctx context.Context, id string) (*Run, error) {
	s, rec, err := e.load(ctx, id)
	if err != nil {
		return nil, err
	}
	return e.refresh(ctx, s, rec)
}

func (e *Engine) load(ctx context.Context, id string) (*store.Store, *run.Record, error) {
	wsID, runID, err := ParseRunID(id)
	if err != nil {
		return nil, nil, err
	}
	s, err := e.open(ctx, wsID)
	if err != nil {
		return nil, nil, err
	}
	rec, err := s.GetRun(ctx, runID)
	return s, rec, err
}

// stillActive observes runs whose records say they are active (a record may be
// stale) and returns those that really are.
func (e *Engine) stillActive(ctx context.Context, s *store.Store, ids []string) ([]string, error) {
	var active []string
	for _, runID := range ids {
		rec, err := s.GetRun(ctx, runID)
		if err != nil {
			return nil, err
		}
		r, err := e.refresh(ctx, s, rec)
		if err != nil {
			return nil, err
		}
		if r.Status.Active() {
			active = append(active, runID)
		}
	}
	return active, nil
}

// refresh brings an active run's record up to date from its target.
func (e *Engine) refresh(ctx context.Context, s *store.Store, rec *run.Record) (*Run, error) {
	if rec.Status.Terminal() || len(rec.Handle) == 0 {
		if err := localCopy(ctx, s, rec); err != nil {
			return nil, err
		}
		r := e.toRun(s, rec)
		noticeOutputsGone(r)
		return r, nil
	}
	if other := elsewhere(s, rec); other != "" {
		// Another machine's run: it follows it and records what it sees.
		r := e.toRun(s, rec)
		r.Message = fmt.Sprintf("run is active on machine %q, which started it and records its progress in the shared workspace; status as last recorded", other)
		return r, nil
	}
	ex, err := e.recoverRun(ctx, s, rec)
	if err != nil {
		return nil, err
	}
	st, err := ex.Status(ctx)
	if drivers.IsUnreachable(err) {
		// The host is out of reach; the run goes on there. Report what we
		// know and observe it again next time.
		r := e.toRun(s, rec)
		r.Message = fmt.Sprintf("compute target %q is unreachable, status as last seen: %v", rec.Target, err)
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	return e.record(ctx, s, rec.ID, ex, st)
}

// record stores an observation, collecting results once the run is terminal.
func (e *Engine) record(ctx context.Context, s *store.Store, id string, ex drivers.Execution, st drivers.State) (*Run, error) {
	// Results are collected once, when the run has ended: for an SSH host a
	// collect brings outputs back over the wire, which no refresh of a running
	// run should pay for.
	var col drivers.Collected
	cerr := errNotCollected
	if st.Status.Terminal() {
		col, cerr = ex.Collect(ctx)
		if cerr == nil {
			if err := pushCollected(ctx, s, id, col); err != nil {
				return nil, err
			}
		}
	}
	rec, err := s.UpdateRun(ctx, id, func(r *run.Record) error {
		if run.CanTransition(r.Status, st.Status) {
			r.Status = st.Status
		}
		r.Phases = mergePhases(r.Phases, st.Phases, r.Status)
		r.FailureReason = st.FailureReason
		r.ExitCode = st.ExitCode
		r.StartTime = st.StartTime
		r.EndTime = st.EndTime
		if st.Message != "" {
			r.Error = run.SanitizeText(st.Message)
		}
		if cerr == nil {
			r.Metrics = run.LastValues(col.Metrics)
			r.Params, r.ScriptTags = col.Params, col.Tags
			r.OutputFiles = col.OutputFiles
			r.LogTail = run.SanitizeText(col.LogTail)
			r.Traceback = run.SanitizeText(col.Traceback)
			r.OutputsPath, r.LogPath = inWorkspace(s.Dir, col.OutputsPath), inWorkspace(s.Dir, col.LogPath)
			if len(col.Warnings) > 0 {
				r.Error = strings.TrimPrefix(r.Error+"; "+run.SanitizeText(strings.Join(col.Warnings, "; ")), "; ")
			}
		}
		for k, v := range st.Details {
			if r.Details == nil {
				r.Details = map[string]string{}
			}
			r.Details[k] = run.SanitizeText(v)
		}
		if len(st.NodeExitCodes) > 0 {
			r.NodeExitCodes = st.NodeExitCodes
		} else if r.ExitCode != nil {
			r.NodeExitCodes = []int{*r.ExitCode}
		}
		if ei := st.Environment; ei != nil {
			hit, secs := ei.CacheHit, ei.BuildSeconds
			r.EnvironmentHash, r.EnvironmentCacheHit, r.EnvironmentBuildSeconds, r.EnvironmentBuilder = ei.Key, &hit, &secs, ei.Builder
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if cerr == nil && rec.Status.Terminal() {
		if err := s.ReplaceMetrics(ctx, id, col.Metrics); err != nil {
			return nil, err
		}
	}
	e.releaseRunBasedPool(ctx, s, rec)
	return e.toRun(s, rec), nil
}

// WaitRun blocks until the run is terminal. When ctx ends first (the create
// timeout) the run is canceled with reason timed_out. A run that did not complete
// returns *RunFailedError along with the run.
func (e *Engine) WaitRun(ctx context.Context, id string) (*Run, error) {
	s, rec, err := e.load(ctx, id)
	if err != nil {
		return nil, err
	}
	return e.waitRun(ctx, s, rec)
}

// waitRun is WaitRun of a record just loaded from s.
func (e *Engine) waitRun(ctx context.Context, s *store.Store, rec *run.Record) (*Run, error) {
	var err error
	if rec.Status.Active() && elsewhere(s, rec) != "" {
		// Another machine follows it: wait for what it records.
		if rec, err = waitRecorded(ctx, s, rec.ID); err != nil {
			return nil, err
		}
	}
	if rec.Status.Active() && len(rec.Handle) > 0 {
		ex, err := e.recoverRun(ctx, s, rec)
		if err != nil {
			return nil, err
		}
		st, werr := ex.Wait(ctx)
		if werr != nil {
			if ctx.Err() == nil {
				return nil, werr
			}
			// Timed out (the create timeout) or interrupted (Ctrl-C, which
			// Terraform passes on as a canceled context): stop the run, under
			// a context of our own, and say which.
			reason, why := run.ReasonTimedOut, "timed out waiting for run"
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				reason, why = run.ReasonCanceled, "interrupted while waiting for run"
			}
			cctx, cancel := context.WithTimeout(context.Background(), e.opts.CancelGrace+30*time.Second)
			defer cancel()
			r, err := e.cancel(cctx, s, rec.ID, reason)
			if err != nil {
				return nil, errors.Join(werr, err)
			}
			return r, fmt.Errorf("%s %s; it was canceled: %w", why, rec.ID, &RunFailedError{Run: r})
		}
		// What record stored, as the store returned it.
		r, err := e.record(ctx, s, rec.ID, ex, st)
		if err != nil {
			return nil, err
		}
		return completed(r)
	}
	return completed(e.toRun(s, rec))
}

// completed is r, with *RunFailedError when it did not complete.
func completed(r *Run) (*Run, error) {
	if r.Status != run.Completed {
		return r, &RunFailedError{Run: r}
	}
	return r, nil
}

// CancelRun stops an active run and waits (up to the grace period and a margin)
// for it to end. The record stays as history.
func (e *Engine) CancelRun(ctx context.Context, id string) (*Run, error) {
	s, rec, err := e.load(ctx, id)
	if err != nil {
		return nil, err
	}
	return e.cancel(ctx, s, rec.ID, run.ReasonCanceled)
}

func (e *Engine) cancel(ctx context.Context, s *store.Store, runID, reason string) (*Run, error) {
	rec, err := s.GetRun(ctx, runID)
	if err != nil {
		return nil, err
	}
	if rec.Status.Terminal() || len(rec.Handle) == 0 {
		return e.toRun(s, rec), nil
	}
	if other := elsewhere(s, rec); other != "" {
		return nil, fmt.Errorf("run %s is active on machine %q, which started it; only that machine can stop its processes: cancel it from there, or wait for it to end", runID, other)
	}
	ex, err := e.recoverRun(ctx, s, rec)
	if err != nil {
		return nil, err
	}
	if _, err := s.UpdateRun(ctx, runID, func(r *run.Record) error { r.Status = run.CancelRequested; return nil }); err != nil {
		return nil, err
	}
	if err := ex.Cancel(ctx, e.opts.CancelGrace, reason); err != nil {
		return nil, fmt.Errorf("canceling run %s: %w", runID, err)
	}
	wctx, stop := context.WithTimeout(ctx, e.opts.CancelGrace+15*time.Second)
	defer stop()
	st, err := ex.Wait(wctx)
	if err != nil {
		return nil, fmt.Errorf("run %s did not stop after cancel: %w", runID, err)
	}
	return e.record(ctx, s, runID, ex, st)
}

// AcknowledgeRun records that Terraform now tracks the run (no adoption after this).
func (e *Engine) AcknowledgeRun(ctx context.Context, id string) error {
	wsID, runID, err := ParseRunID(id)
	if err != nil {
		return err
	}
	s, err := e.open(ctx, wsID)
	if err != nil {
		return err
	}
	return s.MarkReturned(ctx, runID)
}

// ReleaseRun is destroy: cancel if active, keep the record as history.
func (e *Engine) ReleaseRun(ctx context.Context, id string) error {
	s, rec, err := e.load(ctx, id)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := e.cancel(ctx, s, rec.ID, run.ReasonCanceled); err != nil {
		return err
	}
	return s.MarkReleased(ctx, rec.ID)
}

func (e *Engine) toRun(s *store.Store, rec *run.Record) *Run {
	// Until a run is collected, its files are where the engine host keeps
	// them: the run directory of the workspace.
	l := supervise.Layout{Dir: rec.RunDir}
	outputsPath, logPath := fromWorkspace(s.Dir, rec.OutputsPath), fromWorkspace(s.Dir, rec.LogPath)
	if outputsPath == "" {
		outputsPath = l.Outputs()
	}
	if logPath == "" {
		logPath = l.StdLog()
	}
	metrics := rec.Metrics
	if metrics == nil {
		metrics = map[string]float64{}
	}
	outputs := rec.OutputFiles
	if outputs == nil {
		outputs = []string{}
	}
	return &Run{
		ID:                      s.UID + runSep + rec.ID,
		RunID:                   rec.ID,
		WorkspaceID:             s.UID,
		Experiment:              rec.Experiment,
		ComputeTarget:           rec.Target,
		RunConfigName:           rec.RunConfig,
		Status:                  rec.Status,
		FailureReason:           rec.FailureReason,
		Message:                 rec.Error,
		ExitCode:                rec.ExitCode,
		CreatedAt:               rec.CreatedAt,
		Phases:                  rec.Phases,
		StartTime:               rec.StartTime,
		EndTime:                 rec.EndTime,
		DurationSeconds:         rec.DurationSeconds(time.Now()),
		Metrics:                 metrics,
		OutputFiles:             outputs,
		OutputsPath:             outputsPath,
		OutputsURI:              s.RunFilesURI(rec.ID, "outputs"),
		LogsURI:                 s.RunFilesURI(rec.ID, "logs"),
		LogTail:                 rec.LogTail,
		LogPath:                 logPath,
		SnapshotHash:            rec.SnapshotHash,
		SnapshotFiles:           rec.SnapshotFiles,
		SnapshotBytes:           rec.SnapshotBytes,
		EnvironmentHash:         rec.EnvironmentHash,
		EnvironmentCacheHit:     rec.EnvironmentCacheHit,
		EnvironmentBuildSeconds: rec.EnvironmentBuildSeconds,
		Tags:                    rec.Tags,
		Params:                  orEmpty(rec.Params),
		ScriptTags:              orEmpty(rec.ScriptTags),
		Details:                 rec.Details,
		Traceback:               rec.Traceback,

		SourceDirectory:      rec.SourceDirectory,
		Script:               rec.Script,
		Command:              rec.Command,
		Arguments:            rec.Arguments,
		EnvironmentVariables: rec.EnvironmentVariables,
		Triggers:             rec.Triggers,
		RunConfigID:          RunConfigID(s.UID, rec.RunConfig),
	}
}

// SetRunTags replaces a run's tags (the one thing about a run that changes in place).
func (e *Engine) SetRunTags(ctx context.Context, id string, tags map[string]string) (*Run, error) {
	s, rec, err := e.load(ctx, id)
	if err != nil {
		return nil, err
	}
	rec, err = s.UpdateRun(ctx, rec.ID, func(r *run.Record) error { r.Tags = tags; return nil })
	if err != nil {
		return nil, err
	}
	return e.toRun(s, rec), nil
}

// EnvsDir holds a workspace's cache of built environments.
const EnvsDir = drivers.EnvsDir
