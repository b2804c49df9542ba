package main

import (
	"sort"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// What --json prints and the web view's API returns: stable snake_case names.

type workspaceView struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Dir         string            `json:"dir"`
	StoragePath string            `json:"storage_path"`
	Description string            `json:"description"`
	Tags        map[string]string `json:"tags"`
	CreatedAt   time.Time         `json:"created_at"`
	RunCount    int               `json:"run_count"`
	FoundBy     string            `json:"found_by,omitempty"`
}

func viewWorkspace(ws *engine.Workspace, how string) workspaceView {
	return workspaceView{ID: ws.ID, Name: ws.Name, Dir: ws.Dir, StoragePath: ws.StoragePath, Description: ws.Description,
		Tags: orEmpty(ws.Tags), CreatedAt: ws.CreatedAt, RunCount: ws.RunCount, FoundBy: how}
}

type nodesView struct {
	Idle            int    `json:"idle"`
	Busy            int    `json:"busy"`
	Starting        int    `json:"starting"`
	Unusable        int    `json:"unusable"`
	Leaving         int    `json:"leaving"`
	Preempted       int    `json:"preempted"`
	Current         int    `json:"current"`
	Target          int    `json:"target"`
	QueuedRuns      int    `json:"queued_runs"`
	AllocationState string `json:"allocation_state"`
}

type targetView struct {
	ID                string     `json:"id"`
	Name              string     `json:"name"`
	Kind              string     `json:"kind"`
	ProvisioningState string     `json:"provisioning_state"`
	Address           string     `json:"address,omitempty"`
	CreatedAt         *time.Time `json:"created_at,omitempty"`
	Nodes             *nodesView `json:"nodes,omitempty"`
	Facts             factsView  `json:"facts"`
}

// factsView is what probing a target learned (the engine's Target.Facts).
type factsView struct {
	Hostname       string   `json:"hostname"`
	OS             string   `json:"os"`
	Arch           string   `json:"arch"`
	Cores          int      `json:"cores"`
	MemoryBytes    int64    `json:"memory_bytes"`
	GPUs           int      `json:"gpus"`
	Python         string   `json:"python"`
	Docker         bool     `json:"docker"`
	PythonVersions []string `json:"python_versions,omitempty"`
}

func viewTarget(t *engine.Target) targetView {
	f := t.Facts
	v := targetView{ID: t.ID, Name: t.Name, Kind: t.Kind, ProvisioningState: t.ProvisioningState, Address: t.Address,
		Facts: factsView{Hostname: f.Hostname, OS: f.OS, Arch: f.Arch, Cores: f.Cores, MemoryBytes: f.MemoryBytes, GPUs: f.GPUs,
			Python: f.Python, Docker: f.Docker, PythonVersions: f.PythonVersions}}
	if !t.CreatedAt.IsZero() {
		c := t.CreatedAt
		v.CreatedAt = &c
	}
	if n := t.Nodes; n != nil {
		v.Nodes = &nodesView{Idle: n.Idle, Busy: n.Running, Starting: n.Preparing, Unusable: n.Unusable, Leaving: n.Leaving,
			Preempted: n.Preempted, Current: n.Current, Target: n.Target, QueuedRuns: n.Queued, AllocationState: n.AllocationState}
	}
	return v
}

type runView struct {
	ID              string             `json:"id"`
	RunID           string             `json:"run_id"`
	WorkspaceID     string             `json:"workspace_id"`
	Experiment      string             `json:"experiment"`
	Target          string             `json:"compute_target"`
	RunConfig       string             `json:"run_configuration"`
	Status          run.Status         `json:"status"`
	FailureReason   string             `json:"failure_reason,omitempty"`
	Message         string             `json:"message,omitempty"`
	ExitCode        *int               `json:"exit_code"`
	CreatedAt       time.Time          `json:"created_at"`
	StartTime       *time.Time         `json:"start_time"`
	EndTime         *time.Time         `json:"end_time"`
	DurationSeconds float64            `json:"duration_seconds"`
	Metrics         map[string]float64 `json:"metrics"`
	Tags            map[string]string  `json:"tags"`
}

type runDetailView struct {
	runView
	Script               string            `json:"script,omitempty"`
	Command              []string          `json:"command,omitempty"`
	Arguments            []string          `json:"arguments"`
	SourceDirectory      string            `json:"source_directory"`
	EnvironmentHash      string            `json:"environment_hash"`
	EnvironmentCacheHit  *bool             `json:"environment_cache_hit"`
	EnvironmentVariables map[string]string `json:"environment_variables"`
	SnapshotHash         string            `json:"snapshot_hash"`
	SnapshotFileCount    int               `json:"snapshot_file_count"`
	SnapshotBytes        int64             `json:"snapshot_bytes"`
	SnapshotFiles        []snapshotFile    `json:"snapshot_files"`
	Params               map[string]string `json:"params"`
	ScriptTags           map[string]string `json:"script_tags"`
	Details              map[string]string `json:"details"`
	OutputFiles          []string          `json:"output_files"`
	OutputsPath          string            `json:"outputs_path"`
	LogPath              string            `json:"log_path"`
	Traceback            string            `json:"traceback,omitempty"`
	Timeline             []timelineEntry   `json:"timeline"`
}

type snapshotFile struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	Mode string `json:"mode"`
}

type timelineEntry struct {
	Phase string     `json:"phase"`
	At    *time.Time `json:"at"`
}

func viewRun(r *engine.Run) runView {
	return runView{ID: r.ID, RunID: r.RunID, WorkspaceID: r.WorkspaceID, Experiment: r.Experiment, Target: r.ComputeTarget,
		RunConfig: r.RunConfigName, Status: r.Status, FailureReason: r.FailureReason, Message: r.Message, ExitCode: r.ExitCode,
		CreatedAt: r.CreatedAt, StartTime: r.StartTime, EndTime: r.EndTime, DurationSeconds: r.DurationSeconds,
		Metrics: r.Metrics, Tags: orEmpty(r.Tags)}
}

// timelinePhases are the statuses a timeline shows, in order.
var timelinePhases = []run.Status{run.Queued, run.Preparing, run.Running, run.Finalizing, run.CancelRequested, run.Completed, run.Failed, run.Canceled}

// timeline is when the run entered each phase: submitted (Queued),
// Preparing (its environment), Running, Finalizing (results) and its end, as
// far as its host recorded them; the phase it is in now has no time yet when
// the host did not say.
func timeline(r *engine.Run) []timelineEntry {
	at := map[run.Status]*time.Time{}
	for k, v := range r.Phases {
		v := v
		at[k] = &v
	}
	if at[run.Queued] == nil {
		c := r.CreatedAt
		at[run.Queued] = &c
	}
	if at[run.Running] == nil && r.StartTime != nil {
		at[run.Running] = r.StartTime
	}
	if r.Status.Terminal() && r.EndTime != nil {
		at[r.Status] = r.EndTime
	}
	var out []timelineEntry
	for _, p := range timelinePhases {
		if t := at[p]; t != nil {
			out = append(out, timelineEntry{Phase: string(p), At: t})
		} else if p == r.Status {
			out = append(out, timelineEntry{Phase: string(p)})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].At, out[j].At
		return a != nil && b != nil && a.Before(*b)
	})
	return out
}

type metricView struct {
	Name  string   `json:"name"`
	Value float64  `json:"value"`
	Step  *float64 `json:"step"`
	Time  float64  `json:"time,omitempty"`
}

func orEmpty[V any](m map[string]V) map[string]V {
	if m == nil {
		return map[string]V{}
	}
	return m
}

// mainMetrics picks the metrics a runs table shows: those most runs have,
// then by name, at most n.
func mainMetrics(runs []*engine.Run, n int) []string {
	count := map[string]int{}
	for _, r := range runs {
		for k := range r.Metrics {
			count[k]++
		}
	}
	names := make([]string, 0, len(count))
	for k := range count {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		if count[names[i]] != count[names[j]] {
			return count[names[i]] > count[names[j]]
		}
		return names[i] < names[j]
	})
	if len(names) > n {
		names = names[:n]
	}
	sort.Strings(names)
	return names
}
