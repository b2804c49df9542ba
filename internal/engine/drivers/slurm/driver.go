package slurm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// DetailJobID is the run detail holding the Slurm job id.
const DetailJobID = "slurm_job_id"

// Resources are a run configuration's per-run Slurm resources.
type Resources struct {
	CPUsPerNode   int      `json:"cpus_per_node,omitempty"`
	MemoryPerNode string   `json:"memory_per_node,omitempty"` // sbatch --mem, e.g. "4G"
	GPUsPerNode   int      `json:"gpus_per_node,omitempty"`
	SbatchOptions []string `json:"sbatch_options,omitempty"`
	// MaxRetries requeues a run whose node failed (and, at least once, one
	// that was preempted), with the same run id and outputs directory.
	MaxRetries int `json:"max_retries,omitempty"`
}

var memPattern = regexp.MustCompile(`^[1-9][0-9]*[KMGT]?$`)

// forbidden are sbatch options the engine sets itself.
var forbidden = []string{"--job-name", "-J", "--nodes", "-N", "--ntasks-per-node", "--output", "-o", "--error", "-e", "--chdir", "-D", "--parsable", "--wrap", "--requeue", "--no-requeue"}

// CheckResources checks a run configuration's slurm block (usable at plan).
func CheckResources(r *Resources) error {
	if r == nil {
		return nil
	}
	switch {
	case r.CPUsPerNode < 0:
		return field.Errorf("slurm.cpus_per_node", "must not be negative, got %d", r.CPUsPerNode)
	case r.GPUsPerNode < 0:
		return field.Errorf("slurm.gpus_per_node", "must not be negative, got %d", r.GPUsPerNode)
	case r.MaxRetries < 0:
		return field.Errorf("slurm.max_retries", "must not be negative, got %d", r.MaxRetries)
	case r.MemoryPerNode != "" && !memPattern.MatchString(r.MemoryPerNode):
		return field.Errorf("slurm.memory_per_node", "%q is not a Slurm memory size (e.g. 4096, 512M, 16G)", r.MemoryPerNode)
	}
	for i, o := range r.SbatchOptions {
		if !strings.HasPrefix(o, "-") || strings.ContainsAny(o, "\n\x00") {
			return field.Errorf(fmt.Sprintf("slurm.sbatch_options[%d]", i), "%q is not an sbatch option (e.g. --constraint=a100)", o)
		}
		name, _, _ := strings.Cut(o, "=")
		for _, f := range forbidden {
			if name == f {
				return field.Errorf(fmt.Sprintf("slurm.sbatch_options[%d]", i), "%s is set by the provider (job name, nodes, one task per node, output into the run's logs, requeue by max_retries); remove it", name)
			}
		}
	}
	return nil
}

// Driver submits runs to one Slurm cluster.
type Driver struct {
	Spec  Spec
	State State
	name  string
	c     cluster
}

var _ drivers.Driver = (*Driver)(nil)

func (d *Driver) Probe(ctx context.Context) (drivers.Facts, error) {
	var st State
	err := probe(ctx, d.c, d.Spec, &st)
	if st.Login != nil {
		return st.Login.Facts, err
	}
	return drivers.Facts{}, err
}

func (d *Driver) partition() Partition {
	name := d.Spec.Partition
	if name == "" {
		name = d.State.DefaultPartition
	}
	p, _ := d.State.partition(name)
	return p
}

// Capabilities: as many nodes as the partition has.
func (d *Driver) Capabilities(ctx context.Context) (drivers.Capabilities, error) {
	p := d.partition()
	return drivers.Capabilities{MaxNodes: max(p.Nodes, 1), MaxNodesReason: fmt.Sprintf("partition %q of cluster %s has %d node(s)", p.Name, d.State.ClusterName, p.Nodes),
		Frameworks: []string{"Python"}}, nil
}

// PrepareEnvironment: environments are built on the nodes, once per hash
// under shared_root/envs (the first rank builds it under a lock, the others
// wait and reuse it); Docker is not offered.
func (d *Driver) PrepareEnvironment(ctx context.Context, e env.Environment) (env.Launch, error) {
	if e.Dock().Enabled {
		return env.Launch{}, field.Errorf("environment.docker.enabled", "Docker runs are not supported on Slurm targets yet")
	}
	if e.Py().UserManagedDependencies {
		return env.Launch{Interpreter: orDefault(e.Py().InterpreterPath, env.DefaultInterpreter)}, nil
	}
	sys := e
	return env.Launch{System: &sys}, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// handle is what the run record keeps.
type handle struct {
	JobID  string `json:"job_id"`
	RunDir string `json:"run_dir"`
	Nodes  int    `json:"nodes"`
}

// Script is the batch script of a run.
func Script(runID, runDir, agent string, p Partition, spec Spec, nodes int, maxDuration time.Duration, r Resources) string {
	var b strings.Builder
	opt := func(f string, a ...any) { fmt.Fprintf(&b, "#SBATCH "+f+"\n", a...) }
	b.WriteString("#!/bin/sh\n")
	opt("--job-name=%s", "aml-"+runID)
	opt("--nodes=%d", nodes)
	opt("--ntasks-per-node=1")
	opt("--output=%s", path.Join(runDir, "logs", "slurm-%j.out"))
	opt("--open-mode=append")
	// Slurm requeues a job whose node failed or that was preempted (same job,
	// same run directory); the script below caps how often.
	budget := max(r.MaxRetries, 1)
	opt("--requeue")
	if p.Name != "" {
		opt("--partition=%s", p.Name)
	}
	if spec.Account != "" {
		opt("--account=%s", spec.Account)
	}
	if spec.QOS != "" {
		opt("--qos=%s", spec.QOS)
	}
	if maxDuration > 0 {
		// Slurm's limit is in minutes; the run's own supervisor stops it at
		// max_run_duration_seconds (timed_out) before Slurm would. A minute
		// before Slurm's limit the script gets SIGUSR1 (to checkpoint).
		opt("--time=%d", int(maxDuration.Minutes())+2)
		opt("--signal=USR1@60")
	}
	if r.CPUsPerNode > 0 {
		opt("--cpus-per-task=%d", r.CPUsPerNode)
	}
	if r.MemoryPerNode != "" {
		opt("--mem=%s", r.MemoryPerNode)
	}
	if r.GPUsPerNode > 0 {
		opt("--gres=gpu:%d", r.GPUsPerNode)
	}
	for _, o := range r.SbatchOptions {
		opt("%s", o)
	}
	fmt.Fprintf(&b, "if [ \"${SLURM_RESTART_COUNT:-0}\" -gt %d ]; then\n  echo \"aml: requeued ${SLURM_RESTART_COUNT} times, more than slurm.max_retries allows; not running again\" >&2\n  exit 75\nfi\n", budget)
	fmt.Fprintf(&b, `cd %s || exit 1
addr() { scontrol show node -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n 's/^NodeAddr=//p'; }
first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_ADDR=$(addr "$first"); [ -n "$MASTER_ADDR" ] || MASTER_ADDR=$first
ips=""
for h in $(scontrol show hostnames "$SLURM_JOB_NODELIST"); do a=$(addr "$h"); ips="$ips${ips:+,}${a:-$h}"; done
MASTER_PORT=$((20000 + SLURM_JOB_ID %% 20000))
AML_ATTEMPT=$((${SLURM_RESTART_COUNT:-0} + 1))
export MASTER_ADDR MASTER_PORT AML_ATTEMPT AML_NODE_IPS="$ips" AML_SLURM_JOB_ID="$SLURM_JOB_ID"
exec srun --kill-on-bad-exit=1 --ntasks-per-node=1 --task-epilog=%s %s agent supervise-rank %s
`, shq(runDir), shq(path.Join(runDir, ".aml", "task-epilog.sh")), shq(agent), shq(runDir))
	return b.String()
}

var jobIDPattern = regexp.MustCompile(`^(\d+)(;\S+)?$`)

// Start stages the run once into shared_root, writes its batch script and
// submits it with sbatch; the handle keeps the job id.
func (d *Driver) Start(ctx context.Context, spec drivers.RunSpec) (drivers.Handle, error) {
	nodes := spec.Nodes()
	var res Resources
	if spec.Slurm != nil {
		if err := json.Unmarshal(spec.Slurm, &res); err != nil {
			return nil, err
		}
	}
	runDir, err := d.c.stage(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("staging in %s: %w", d.Spec.SharedRoot, err)
	}
	agent, err := d.c.agent(ctx)
	if err != nil {
		return nil, fmt.Errorf("staging the agent: %w", err)
	}
	// Run after each task by its node's slurmd: a rank whose supervisor was
	// killed leaves nothing running there.
	epilog := "#!/bin/sh\nexec " + shq(agent) + " agent rank-epilog " + shq(runDir) + "\n"
	if err := d.c.writeFile(ctx, path.Join(runDir, ".aml", "task-epilog.sh"), []byte(epilog)); err != nil {
		return nil, err
	}
	scriptPath := path.Join(runDir, ".aml", "job.sh")
	if err := d.c.writeFile(ctx, scriptPath, []byte(Script(spec.RunID, runDir, agent, d.partition(), d.Spec, nodes, spec.MaxDuration, res))); err != nil {
		return nil, err
	}
	out, err := d.submit(ctx, scriptPath)
	if err != nil {
		return nil, err
	}
	return json.Marshal(handle{JobID: out, RunDir: runDir, Nodes: nodes})
}

// submit runs sbatch, retrying a controller that does not answer (bounded).
func (d *Driver) submit(ctx context.Context, script string) (string, error) {
	var lastErr error
	for attempt, delay := 0, time.Second; attempt < 4; attempt, delay = attempt+1, delay*2 {
		out, err := d.c.run(ctx, "sbatch --parsable "+shq(script))
		if err == nil {
			m := jobIDPattern.FindStringSubmatch(strings.TrimSpace(string(out)))
			if m == nil {
				return "", fmt.Errorf("sbatch answered %q, not a job id", strings.TrimSpace(string(out)))
			}
			return m[1], nil
		}
		lastErr = err
		if !controllerDown(err) {
			break
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(delay):
		}
	}
	if controllerDown(lastErr) {
		return "", fmt.Errorf("the Slurm controller of %s does not answer (tried 4 times): %w", d.name, lastErr)
	}
	return "", fmt.Errorf("sbatch on %s: %w", d.c.key(), lastErr)
}

func controllerDown(err error) bool {
	if err == nil {
		return false
	}
	m := err.Error()
	return strings.Contains(m, "Unable to contact slurm controller") || strings.Contains(m, "Socket timed out") ||
		strings.Contains(m, "Connection refused") || strings.Contains(m, "Slurm backup controller in standby mode") || strings.Contains(m, "Zero Bytes were transmitted")
}

func (d *Driver) Recover(ctx context.Context, raw drivers.Handle) (drivers.Execution, error) {
	var h handle
	if err := json.Unmarshal(raw, &h); err != nil || h.JobID == "" || h.RunDir == "" {
		return nil, fmt.Errorf("slurm run handle is incomplete (%v)", err)
	}
	res, err := d.c.results(path.Base(h.RunDir), h.RunDir)
	if err != nil {
		return nil, err
	}
	return &execution{d: d, h: h, results: res}, nil
}

type execution struct {
	d       *Driver
	h       handle
	results drivers.Execution
	// canceled is the reason of this execution's Cancel: Slurm signals every
	// process of the job, so a rank may record a death by signal first.
	canceled string
}

// jobInfo is what squeue or scontrol says of a job.
type jobInfo struct {
	State, Reason string
	Restarts      int
	Known         bool
}

var fieldRE = regexp.MustCompile(`(\w+)=(\S*)`)

func (e *execution) job(ctx context.Context) (jobInfo, error) {
	out, err := e.d.c.run(ctx, "scontrol show job -o "+shq(e.h.JobID)+" 2>&1 || true")
	if err != nil {
		return jobInfo{}, err
	}
	text := strings.TrimSpace(string(out))
	if controllerDown(errors.New(text)) {
		// The run is not failed: its status comes back with the controller.
		return jobInfo{}, drivers.Unreachable(fmt.Errorf("the Slurm controller does not answer: %s", text))
	}
	if strings.Contains(text, "Invalid job id") || text == "" {
		return jobInfo{}, nil // purged: the run directory tells
	}
	var j jobInfo
	j.Known = true
	for _, m := range fieldRE.FindAllStringSubmatch(text, -1) {
		switch m[1] {
		case "JobState":
			j.State = m[2]
		case "Reason":
			j.Reason = m[2]
		case "Restarts":
			j.Restarts, _ = strconv.Atoi(m[2])
		}
	}
	return j, nil
}

// Status maps the job's state onto the run's, with every rank's outcome from
// the run directory (so results never depend on Slurm accounting).
func (e *execution) Status(ctx context.Context) (drivers.State, error) {
	j, err := e.job(ctx)
	if err != nil {
		return drivers.State{}, err
	}
	ranks, err := e.d.c.ranks(ctx, e.h.RunDir, e.h.Nodes)
	if err != nil {
		return drivers.State{}, err
	}
	st := e.state(ctx, j, ranks)
	st.Details = map[string]string{DetailJobID: e.h.JobID}
	return st, nil
}

func (e *execution) state(ctx context.Context, j jobInfo, ranks []drivers.State) drivers.State {
	switch j.State {
	case "PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED":
		if allCompleted(ranks) {
			// Every rank finished its work, but Slurm lost track of the
			// launch (a controller restarted meanwhile) and requeued the job:
			// the run is done; the requeued job must not run it again.
			_, _ = e.d.c.run(ctx, "scancel "+shq(e.h.JobID))
			return e.ended(jobInfo{}, ranks)
		}
		msg := "Slurm job " + e.h.JobID + " is pending"
		if j.Reason != "" && j.Reason != "None" {
			msg += ": " + j.Reason
		}
		return drivers.State{Status: run.Queued, Message: msg}
	case "RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING":
		st := ranks[0]
		if st.Status == "" || st.Status.Terminal() {
			st = drivers.State{Status: run.Running}
		}
		if j.Restarts > 0 {
			st.Message = fmt.Sprintf("attempt %d (Slurm requeued the job after a node failure or preemption)", j.Restarts+1)
		}
		return st
	}
	if j.Known && !terminalJob(j.State) {
		return drivers.State{Status: run.Running, Message: "Slurm job " + e.h.JobID + " is " + strings.ToLower(j.State)}
	}
	return e.ended(j, ranks)
}

func allCompleted(ranks []drivers.State) bool {
	for _, r := range ranks {
		if r.Status != run.Completed {
			return false
		}
	}
	return len(ranks) > 0
}

func terminalJob(s string) bool {
	switch s {
	case "COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE":
		return true
	}
	return false
}

// ended is a finished job's outcome: every rank's own record, then what Slurm
// says about why it ended.
func (e *execution) ended(j jobInfo, ranks []drivers.State) drivers.State {
	codes := make([]int, len(ranks))
	out := drivers.State{Status: run.Completed}
	for i, r := range ranks {
		codes[i] = -1
		if r.ExitCode != nil {
			codes[i] = *r.ExitCode
		}
		if r.EndTime != nil && (out.EndTime == nil || r.EndTime.After(*out.EndTime)) {
			out.EndTime = r.EndTime
		}
		if i == 0 {
			out.StartTime, out.Environment = r.StartTime, r.Environment
		}
	}
	if len(ranks) > 1 {
		out.NodeExitCodes = codes
	}
	for i, r := range ranks {
		if r.Status != run.Completed {
			out.Status, out.FailureReason, out.ExitCode, out.Message = r.Status, r.FailureReason, r.ExitCode, r.Message
			if r.Status == "" || !r.Status.Terminal() {
				out.Status, out.FailureReason = run.Failed, run.ReasonLost
				out.Message = fmt.Sprintf("rank %d of Slurm job %s left no result", i, e.h.JobID)
			} else if len(ranks) > 1 {
				out.Message = fmt.Sprintf("rank %d ended %s (%s): %s", i, r.Status, r.FailureReason, r.Message)
			}
			break
		}
	}
	if out.Status == run.Completed && ranks[0].ExitCode != nil {
		out.ExitCode = ranks[0].ExitCode
	}
	switch j.State {
	case "TIMEOUT", "DEADLINE":
		out.Status, out.FailureReason, out.Message = run.Failed, run.ReasonTimedOut, "Slurm job "+e.h.JobID+" reached its time limit"
	case "CANCELLED":
		reason := e.canceled
		if reason == "" && ranks[0].Status == run.Canceled && ranks[0].FailureReason != "" {
			reason = ranks[0].FailureReason
		}
		if reason == "" {
			reason = run.ReasonCanceled
		}
		out.Status, out.FailureReason, out.Message = run.Canceled, reason, "Slurm job "+e.h.JobID+" was canceled (scancel)"
	case "NODE_FAIL", "BOOT_FAIL":
		out.Status, out.FailureReason, out.Message = run.Failed, "node_fail", "a node of Slurm job "+e.h.JobID+" failed ("+j.State+"); no retries left (slurm.max_retries)"
	case "PREEMPTED":
		out.Status, out.FailureReason, out.Message = run.Failed, "preempted", "Slurm job "+e.h.JobID+" was preempted; no retries left (slurm.max_retries)"
	case "OUT_OF_MEMORY":
		out.Status, out.FailureReason, out.Message = run.Failed, "out_of_memory", "Slurm job "+e.h.JobID+" ran out of memory (slurm.memory_per_node)"
	}
	return out
}

func (e *execution) Wait(ctx context.Context) (drivers.State, error) {
	return drivers.Poll(ctx, 200*time.Millisecond, 2*time.Second, e.Status)
}

func (e *execution) Logs(ctx context.Context, offset int64) ([]byte, int64, error) {
	return e.results.Logs(ctx, offset)
}

// Cancel records the reason for the ranks, then scancel: Slurm sends SIGTERM
// to the job's steps (each rank supervisor stops its script's group) and
// SIGKILL after its KillWait.
func (e *execution) Cancel(ctx context.Context, grace time.Duration, reason string) error {
	req, _ := json.Marshal(map[string]any{"grace_seconds": grace.Seconds(), "reason": reason, "at": time.Now().UTC()})
	_ = e.d.c.writeFile(ctx, path.Join(e.h.RunDir, ".aml", "cancel.json"), req)
	e.canceled = reason
	if _, err := e.d.c.run(ctx, "scancel "+shq(e.h.JobID)); err != nil {
		return fmt.Errorf("scancel %s: %w", e.h.JobID, err)
	}
	return nil
}

// Collect is rank 0's metrics, outputs and log (all ranks share the outputs
// directory).
func (e *execution) Collect(ctx context.Context) (drivers.Collected, error) {
	c, err := e.results.Collect(ctx)
	if err != nil {
		return c, err
	}
	sort.Strings(c.OutputFiles)
	return c, nil
}
