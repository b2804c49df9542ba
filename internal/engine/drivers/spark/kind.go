// Package spark is the kind of attached Spark clusters (aml_hdinsight_attachment,
// Azure ML's HDInsightCompute): a head node reached over SSH (package sshhost)
// where PySpark runs are submitted with spark-submit, to YARN, a standalone
// master or local[*]. The host runtime stages the run and supervises the
// spark-submit driver process as it would any script.
package spark

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/sshhost"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
)

// Name is the kind as recorded in the workspace.
const Name = "hdinsight"

func init() { drivers.Register(kind{}) }

// Spec is an aml_hdinsight_attachment as configured (secrets apart).
type Spec struct {
	sshhost.Spec
	// SparkHome is where Spark is on the head node; empty: $SPARK_HOME, then
	// spark-submit on the login PATH.
	SparkHome string `json:"spark_home,omitempty"`
	// Master is spark-submit's --master: yarn, local, local[N], local[*],
	// spark://host:port, k8s://...
	Master string `json:"spark_master"`
	// DeployMode is client or cluster.
	DeployMode string `json:"deploy_mode"`
}

// State is what attaching learned: the host's and Spark's.
type State struct {
	sshhost.State
	SparkSubmit   string `json:"spark_submit"`
	SparkVersion  string `json:"spark_version"`
	ScalaVersion  string `json:"scala_version,omitempty"`
	JavaVersion   string `json:"java_version,omitempty"`
	HadoopVersion string `json:"hadoop_version,omitempty"`
}

// Defaults and allowed values, shared with the provider's schema.
const (
	DefaultMaster     = "yarn"
	DefaultDeployMode = "client"
)

// DeployModes are spark-submit's --deploy-mode values.
var DeployModes = []string{"client", "cluster"}

var masterPattern = regexp.MustCompile(`^(yarn|local|local\[(\*|[1-9][0-9]*)(,[1-9][0-9]*)?\]|spark://[^/\s]+(:[0-9]+)?(,[^/\s]+(:[0-9]+)?)*|k8s://\S+)$`)

// MasterForms says which masters are accepted (for errors and docs).
const MasterForms = "yarn, local, local[N], local[*], spark://host:port or k8s://https://host:port"

// CheckSpec checks spark_master and deploy_mode (usable at plan time).
func CheckSpec(master, mode string) error {
	if !masterPattern.MatchString(master) {
		return field.Errorf("spark_master", "%q is not a Spark master URL; use %s", master, MasterForms)
	}
	switch mode {
	case "client":
	case "cluster":
		switch {
		case strings.HasPrefix(master, "local"):
			return field.Errorf("deploy_mode", "cluster mode does not run with spark_master = %q (the driver would have nowhere to go); use deploy_mode = \"client\"", master)
		case strings.HasPrefix(master, "spark://"):
			return field.Errorf("deploy_mode", "Spark does not run Python applications in cluster mode on a standalone master (%s); use deploy_mode = \"client\"", master)
		}
	default:
		return field.Errorf("deploy_mode", "%q is not a deploy mode; use one of %s", mode, strings.Join(DeployModes, ", "))
	}
	return nil
}

// Local reports whether a master runs the executors in the driver's process
// on the head node (so the head node's Python serves them).
func Local(master string) bool { return strings.HasPrefix(master, "local") }

type kind struct{}

func (kind) Name() string { return Name }

// Attach connects to the head node as aml_remote_compute does, then finds
// spark-submit (spark_home, $SPARK_HOME, the login PATH) and asks it for its
// versions.
func (kind) Attach(ctx context.Context, w *drivers.Workspace, name string, rawSpec, rawSecrets json.RawMessage) (drivers.Target, any, error) {
	var spec Spec
	creds, err := sshhost.DecodeAttach(rawSpec, rawSecrets, &spec)
	if err != nil {
		return drivers.Target{}, nil, err
	}
	spec.Name = name
	if spec.Master == "" {
		spec.Master = DefaultMaster
	}
	if spec.DeployMode == "" {
		spec.DeployMode = DefaultDeployMode
	}
	if err := CheckSpec(spec.Master, spec.DeployMode); err != nil {
		return drivers.Target{}, nil, err
	}
	if spec.SparkHome != "" && !path.IsAbs(spec.SparkHome) {
		return drivers.Target{}, nil, field.Errorf("spark_home", "%q must be an absolute path on the head node", spec.SparkHome)
	}
	hst, host, err := sshhost.Connect(ctx, w, &spec.Spec, creds)
	if err != nil {
		return drivers.Target{}, nil, err
	}
	st := State{State: hst}
	if err := probeSpark(ctx, host, spec, &st); err != nil {
		return drivers.Target{}, nil, err
	}
	specJSON, _ := json.Marshal(spec)
	stateJSON, _ := json.Marshal(st)
	return drivers.Target{Spec: specJSON, State: stateJSON}, creds, nil
}

// findSubmit is the shell that finds spark-submit, or says where it looked.
func findSubmit(sparkHome string) string {
	return "p1=" + remote.ShellQuote(path.Join(sparkHome, "bin", "spark-submit")) + `
p2=${SPARK_HOME:+$SPARK_HOME/bin/spark-submit}
for c in "$p1" "$p2"; do
  if [ -n "$c" ] && [ "$c" != "bin/spark-submit" ] && [ -x "$c" ]; then echo "found $c"; exit 0; fi
done
if c=$(command -v spark-submit); then echo "found $c"; exit 0; fi
echo "missing SPARK_HOME=${SPARK_HOME:-} PATH=$PATH"`
}

var (
	versionRE = regexp.MustCompile(`version (\d+\.\d+\.\d+\S*)`)
	scalaRE   = regexp.MustCompile(`Using Scala version (\S+?),(?:.*?, (\S+))?\s*$`)
	hadoopRE  = regexp.MustCompile(`hadoop-client-api-(\d+\.\d+\.\d+)\.jar`)
)

func probeSpark(ctx context.Context, host *sshhost.Driver, spec Spec, st *State) error {
	out, err := host.Output(ctx, "sh -c "+remote.ShellQuote(findSubmit(spec.SparkHome)))
	if err != nil {
		return fmt.Errorf("looking for spark-submit on %s: %w", host.Endpoint.Key(), err)
	}
	line := strings.TrimSpace(string(out))
	submit, found := strings.CutPrefix(line, "found ")
	if !found {
		where := "$SPARK_HOME/bin and the login PATH"
		attr := "address"
		if spec.SparkHome != "" {
			where = spec.SparkHome + "/bin, " + where
			attr = "spark_home"
		}
		return field.Errorf(attr, "spark-submit not found on %s: looked in %s (%s); install Spark there or set spark_home", host.Endpoint.Key(), where, strings.TrimPrefix(line, "missing "))
	}
	st.SparkSubmit = submit
	home := path.Dir(path.Dir(submit))
	cmd := remote.ShellQuote(submit) + " --version 2>&1; ls " + remote.ShellQuote(path.Join(home, "jars")) + " 2>/dev/null | grep '^hadoop-client-api-' || true"
	out, err = host.Output(ctx, cmd)
	if err != nil {
		return field.Errorf("spark_home", "%s --version failed on %s: %v", submit, host.Endpoint.Key(), err)
	}
	text := string(out)
	if m := versionRE.FindStringSubmatch(text); m != nil {
		st.SparkVersion = m[1]
	} else {
		return field.Errorf("spark_home", "%s --version on %s did not report a Spark version (is Java installed for %s?): %s", submit, host.Endpoint.Key(), spec.Username, lastLines(text, 5))
	}
	for _, l := range strings.Split(text, "\n") {
		if m := scalaRE.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			st.ScalaVersion, st.JavaVersion = m[1], m[2]
		}
	}
	if m := hadoopRE.FindStringSubmatch(text); m != nil {
		st.HadoopVersion = m[1]
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func (kind) Apply(ctx context.Context, w *drivers.Workspace, t drivers.Target) error { return nil }

func decode(t drivers.Target) (Spec, State, error) { return drivers.Decode[Spec, State](t) }

func (kind) Open(ctx context.Context, w *drivers.Workspace, t drivers.Target) (drivers.Driver, error) {
	spec, st, err := decode(t)
	if err != nil {
		return nil, err
	}
	host, err := sshhost.Open(w, t.Name, spec.Spec, st.State)
	if err != nil {
		return nil, err
	}
	return &Driver{Host: host, Spec: spec, State: st}, nil
}

func (kind) Describe(ctx context.Context, w *drivers.Workspace, t drivers.Target) (drivers.Description, error) {
	spec, st, err := decode(t)
	if err != nil {
		return drivers.Description{}, err
	}
	return drivers.Description{Facts: st.Facts, Address: spec.Address, ProvisioningState: "Succeeded"}, nil
}

// Release holds nothing: files on the head node are never deleted.
func (kind) Release(ctx context.Context, w *drivers.Workspace, t drivers.Target) error { return nil }
