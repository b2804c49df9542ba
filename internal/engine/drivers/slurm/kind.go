// Package slurm is the kind of attached Slurm clusters (aml_batch_attachment,
// Azure ML's BatchCompute): runs are staged once into a shared directory every
// node sees, submitted with sbatch, and all ranks run there, one per node,
// under srun and the host runtime's rank supervisor. Slurm schedules; results
// come from the run directory, never from Slurm accounting.
package slurm

import (
	"context"
	"encoding/json"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/sshhost"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
)

// Name is the kind as recorded in the workspace.
const Name = "slurm"

func init() { drivers.Register(kind{}) }

// Spec is an aml_batch_attachment as configured (secrets apart).
type Spec struct {
	Partition string `json:"partition,omitempty"`
	Account   string `json:"account,omitempty"`
	QOS       string `json:"qos,omitempty"`
	// Login is the login node; nil: submit from the machine running Terraform.
	Login *sshhost.Spec `json:"login,omitempty"`
	// SharedRoot is a directory every node sees: staging, environments, results.
	SharedRoot string `json:"shared_root"`
}

// Partition is one of the cluster's partitions as sinfo reports it.
type Partition struct {
	Name    string `json:"name"`
	Nodes   int    `json:"nodes"`
	State   string `json:"state"`
	MaxTime string `json:"max_time"`
	Default bool   `json:"default"`
}

// State is what attaching learned.
type State struct {
	Login            *sshhost.State `json:"login,omitempty"`
	SlurmVersion     string         `json:"slurm_version"`
	ClusterName      string         `json:"cluster_name"`
	Partitions       []Partition    `json:"partitions"`
	DefaultPartition string         `json:"default_partition"`
}

type kind struct{}

func (kind) Name() string { return Name }

func (kind) Attach(ctx context.Context, w *drivers.Workspace, name string, rawSpec, rawSecrets json.RawMessage) (drivers.Target, any, error) {
	var spec Spec
	creds, err := sshhost.DecodeAttach(rawSpec, rawSecrets, &spec)
	if err != nil {
		return drivers.Target{}, nil, err
	}
	if !path.IsAbs(spec.SharedRoot) {
		return drivers.Target{}, nil, field.Errorf("shared_root", "%q must be an absolute directory that every node of the cluster sees", spec.SharedRoot)
	}
	var st State
	var c cluster
	if spec.Login != nil {
		spec.Login.Name = name
		spec.Login.RemoteRoot = spec.SharedRoot
		hst, host, err := sshhost.Connect(ctx, w, spec.Login, creds)
		if err != nil {
			return drivers.Target{}, nil, field.Within("login", err)
		}
		st.Login = &hst
		c = &sshCluster{host: host}
	} else {
		if err := os.MkdirAll(spec.SharedRoot, 0o755); err != nil {
			return drivers.Target{}, nil, field.Errorf("shared_root", "cannot create %s: %v", spec.SharedRoot, err)
		}
		if f, err := os.CreateTemp(spec.SharedRoot, ".aml-write-test-*"); err != nil {
			return drivers.Target{}, nil, field.Errorf("shared_root", "%s is not writable: %v", spec.SharedRoot, err)
		} else {
			f.Close()
			os.Remove(f.Name())
		}
		c = &localCluster{root: spec.SharedRoot}
	}
	if err := probe(ctx, c, spec, &st); err != nil {
		return drivers.Target{}, nil, err
	}
	specJSON, _ := json.Marshal(spec)
	stateJSON, _ := json.Marshal(st)
	var keep any
	if spec.Login != nil {
		keep = creds
	}
	return drivers.Target{Spec: specJSON, State: stateJSON}, keep, nil
}

var versionRE = regexp.MustCompile(`slurm(?:-wlm)? (\d+\.\d+\.\d+\S*)`)

func probe(ctx context.Context, c cluster, spec Spec, st *State) error {
	out, err := c.run(ctx, "sinfo --version && scontrol show config | sed -n 's/^ClusterName *= *//p' && echo '--' && sinfo -h -o '%P|%D|%a|%l'")
	if err != nil {
		attr := "login"
		if spec.Login == nil {
			attr = "shared_root"
		}
		return field.Errorf(attr, "the Slurm client does not answer on %s (sinfo, scontrol on PATH, a controller that answers): %v", c.key(), err)
	}
	head, parts, _ := strings.Cut(string(out), "--\n")
	lines := strings.Split(strings.TrimSpace(head), "\n")
	if m := versionRE.FindStringSubmatch(lines[0]); m != nil {
		st.SlurmVersion = m[1]
	}
	if len(lines) > 1 {
		st.ClusterName = strings.TrimSpace(lines[1])
	}
	for _, l := range strings.Split(strings.TrimSpace(parts), "\n") {
		f := strings.Split(strings.TrimSpace(l), "|")
		if len(f) != 4 {
			continue
		}
		p := Partition{Name: strings.TrimSuffix(f[0], "*"), State: f[2], MaxTime: f[3], Default: strings.HasSuffix(f[0], "*")}
		p.Nodes, _ = strconv.Atoi(f[1])
		st.Partitions = append(st.Partitions, p)
		if p.Default {
			st.DefaultPartition = p.Name
		}
	}
	if spec.Partition != "" {
		if _, ok := st.partition(spec.Partition); !ok {
			return field.Errorf("partition", "%q is not a partition of cluster %s; it has: %s", spec.Partition, st.ClusterName, st.partitionNames())
		}
	} else if st.DefaultPartition == "" {
		return field.Errorf("partition", "cluster %s has no default partition; choose one of: %s", st.ClusterName, st.partitionNames())
	}
	return nil
}

func (st State) partition(name string) (Partition, bool) {
	for _, p := range st.Partitions {
		if p.Name == name {
			return p, true
		}
	}
	return Partition{}, false
}

func (st State) partitionNames() string {
	names := make([]string, len(st.Partitions))
	for i, p := range st.Partitions {
		names[i] = p.Name
	}
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}

func (kind) Apply(ctx context.Context, w *drivers.Workspace, t drivers.Target) error { return nil }

func decode(t drivers.Target) (Spec, State, error) { return drivers.Decode[Spec, State](t) }

func (kind) Open(ctx context.Context, w *drivers.Workspace, t drivers.Target) (drivers.Driver, error) {
	spec, st, err := decode(t)
	if err != nil {
		return nil, err
	}
	d := &Driver{Spec: spec, State: st, name: t.Name}
	if spec.Login != nil {
		host, err := sshhost.Open(w, t.Name, *spec.Login, *st.Login)
		if err != nil {
			return nil, err
		}
		d.c = &sshCluster{host: host}
	} else {
		d.c = &localCluster{root: spec.SharedRoot, blobs: w.Blobs(), agentPath: w.AgentPath(), envCacheBytes: w.EnvCacheBytes}
	}
	return d, nil
}

func (kind) Describe(ctx context.Context, w *drivers.Workspace, t drivers.Target) (drivers.Description, error) {
	spec, st, err := decode(t)
	if err != nil {
		return drivers.Description{}, err
	}
	d := drivers.Description{ProvisioningState: "Succeeded"}
	if st.Login != nil {
		d.Facts, d.Address = st.Login.Facts, spec.Login.Address
	}
	return d, nil
}

// Release holds nothing: files under shared_root are never deleted.
func (kind) Release(ctx context.Context, w *drivers.Workspace, t drivers.Target) error { return nil }

func shq(s string) string { return remote.ShellQuote(s) }
