package spark

import (
	"context"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/sshhost"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// DetailAppID is the run detail holding the Spark application id.
const DetailAppID = "spark_application_id"

// eventsDir is where, inside the run directory, the driver writes its Spark
// event log: the file's name is the application id, on every master, and the
// log comes back with the run's logs (a Spark history server can read it).
const eventsDir = "logs/spark-events"

// Driver submits PySpark runs on an attached cluster's head node.
type Driver struct {
	Host  *sshhost.Driver
	Spec  Spec
	State State
}

var _ drivers.Driver = (*Driver)(nil)

func (d *Driver) Probe(ctx context.Context) (drivers.Facts, error) { return d.Host.Probe(ctx) }

// Capabilities: one Spark application per run (its executors are Spark's
// business), PySpark only, no Docker.
func (d *Driver) Capabilities(ctx context.Context) (drivers.Capabilities, error) {
	return drivers.Capabilities{MaxNodes: 1, Frameworks: []string{"PySpark"}}, nil
}

// PrepareEnvironment checks on the head node that it can provide the
// environment. A system-managed environment is built on the head node only:
// with a master whose executors run elsewhere they would use another Python,
// so that is refused rather than left to fail (or worse, to work differently)
// on the executors.
func (d *Driver) PrepareEnvironment(ctx context.Context, e env.Environment) (env.Launch, error) {
	if e.Dock().Enabled {
		return env.Launch{}, field.Errorf("environment.docker.enabled", "Docker runs are not supported on Spark targets; the Spark driver and executors run as the cluster runs them")
	}
	if !e.Py().UserManagedDependencies && !Local(d.Spec.Master) {
		return env.Launch{}, field.Errorf("environment.python.user_managed_dependencies",
			"a system-managed environment is built on the head node only, and the executors of spark_master = %q would run another Python; "+
				"set user_managed_dependencies = true with an interpreter_path present on every node (PYSPARK_PYTHON), or use a local[*] master", d.Spec.Master)
	}
	return d.Host.PrepareEnvironment(ctx, e)
}

// Argv is the spark-submit command line of a run, run in its run directory:
// the attachment's master and deploy mode, the run's name, Azure's default of
// one application attempt, the event log in the run's logs, the run
// configuration's pairs over these defaults, then the script and arguments.
func Argv(submit, master, mode, name, runDir string, conf map[string]string, script string, args []string) []string {
	merged := map[string]string{
		"spark.yarn.maxAppAttempts": "1",
		"spark.eventLog.enabled":    "true",
		"spark.eventLog.dir":        "file://" + path.Join(runDir, eventsDir),
	}
	for k, v := range conf {
		merged[k] = v
	}
	argv := []string{submit, "--master", master, "--deploy-mode", mode, "--name", name}
	for _, k := range run.SortedKeys(merged) {
		argv = append(argv, "--conf", k+"="+merged[k])
	}
	return append(append(argv, script), args...)
}

// Start stages the run on the head node and launches spark-submit under the
// host runtime's supervisor (which owns it: cancel stops its process group).
func (d *Driver) Start(ctx context.Context, spec drivers.RunSpec) (drivers.Handle, error) {
	if spec.Program.Script == "" {
		return nil, field.Errorf("script", "a PySpark run on %q takes a script (spark-submit's application), not a command", d.Spec.Name)
	}
	runDir := d.Host.RunDir(spec.RunID)
	argv := Argv(d.State.SparkSubmit, d.Spec.Master, d.Spec.DeployMode, spec.Experiment+"/"+spec.RunID, runDir, spec.SparkConf, spec.Program.Script, spec.Program.Arguments)
	// Spark refuses an event log directory that does not exist.
	spec.Program = drivers.Program{Command: append([]string{"sh", "-c", `mkdir -p "$1" && shift && exec "$@"`, "sh", eventsDir}, argv...)}
	vars := map[string]string{}
	if py := spec.Launch.Interpreter; py != "" {
		// User-managed: the driver's and executors' Python (system-managed:
		// the supervisor points them at the built environment).
		vars["PYSPARK_PYTHON"], vars["PYSPARK_DRIVER_PYTHON"] = py, py
	}
	for k, v := range spec.Env {
		vars[k] = v
	}
	spec.Env = vars
	return d.Host.Start(ctx, spec)
}

// Recover re-attaches to a run; the application id is looked up on use.
func (d *Driver) Recover(ctx context.Context, h drivers.Handle) (drivers.Execution, error) {
	inner, err := d.Host.Recover(ctx, h)
	if err != nil {
		return nil, err
	}
	runDir, err := sshhost.RunDirOf(h)
	if err != nil {
		return nil, err
	}
	return &execution{Execution: inner, d: d, runDir: runDir}, nil
}

type execution struct {
	drivers.Execution
	d      *Driver
	runDir string
	appID  string
}

var appIDPattern = regexp.MustCompile(`^(application_\d+_\d+|app-\d{14}-\d{4,}|local-\d+|spark-[0-9a-f]{32})(\.inprogress)?$`)

// findAppID lists the run's event log directory on the head node.
func (e *execution) findAppID(ctx context.Context) string {
	if e.appID != "" {
		return e.appID
	}
	out, err := e.d.Host.Output(ctx, "ls -1 "+remote.ShellQuote(path.Join(e.runDir, eventsDir))+" 2>/dev/null | head -n 64 || true")
	if err != nil {
		return ""
	}
	for _, name := range strings.Fields(string(out)) {
		if m := appIDPattern.FindStringSubmatch(name); m != nil {
			e.appID = m[1]
			break
		}
	}
	return e.appID
}

func (e *execution) withAppID(ctx context.Context, st drivers.State) drivers.State {
	if id := e.findAppID(ctx); id != "" {
		if st.Details == nil {
			st.Details = map[string]string{}
		}
		st.Details[DetailAppID] = id
	}
	return st
}

func (e *execution) Status(ctx context.Context) (drivers.State, error) {
	st, err := e.Execution.Status(ctx)
	if err != nil {
		return st, err
	}
	return e.withAppID(ctx, st), nil
}

func (e *execution) Wait(ctx context.Context) (drivers.State, error) {
	st, err := e.Execution.Wait(ctx)
	if err != nil {
		return st, err
	}
	return e.withAppID(ctx, st), nil
}

// YarnKill is the command that stops a YARN application (a kill of the local
// spark-submit does not stop an application in cluster mode, or one whose
// driver is already gone).
func YarnKill(appID string) string {
	return "yarn application -kill " + remote.ShellQuote(appID)
}

// Cancel stops the driver in bounded time (SIGTERM to its process group,
// SIGKILL after grace) and, on YARN, kills the application too.
func (e *execution) Cancel(ctx context.Context, grace time.Duration, reason string) error {
	err := e.Execution.Cancel(ctx, grace, reason)
	if e.d.Spec.Master == "yarn" {
		if id := e.findAppID(ctx); strings.HasPrefix(id, "application_") {
			kctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if _, kerr := e.d.Host.Output(kctx, YarnKill(id)); kerr != nil {
				err = errors.Join(err, fmt.Errorf("killing YARN application %s: %w", id, kerr))
			}
		}
	}
	return err
}
