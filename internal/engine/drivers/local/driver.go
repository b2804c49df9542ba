// Package local is the driver of the machine running Terraform: the reserved
// target "local", which needs no resource. Runs execute under the host
// runtime's detached supervisor (package hostrun) in the workspace's runs
// directory.
package local

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
)

// Name is the reserved target name (and kind) of this machine.
const Name = "local"

func init() { drivers.Register(kind{}) }

// Driver runs on the engine host. RunsRoot is the workspace's runs directory;
// AgentCommand is how to start this program's agent (e.g. [exe, "agent"]).
type Driver struct {
	RunsRoot      string
	EnvRoot       string // cache of system-managed environments
	EnvCacheBytes int64
	AgentCommand  []string
}

var _ drivers.Driver = (*Driver)(nil)

// Probe describes this machine.
func (d *Driver) Probe(ctx context.Context) (drivers.Facts, error) {
	return hostrun.ProbeHost(ctx), nil
}

// Capabilities: one node, this machine's GPUs, Docker when an engine answers
// (checked when a run asks for it).
func (d *Driver) Capabilities(ctx context.Context) (drivers.Capabilities, error) {
	return drivers.Capabilities{MaxNodes: 1, Docker: true, Frameworks: []string{"Python"}, PlanTimeEnvironment: true}, nil
}

// PrepareEnvironment checks this machine can provide the environment.
func (d *Driver) PrepareEnvironment(ctx context.Context, e env.Environment) (env.Launch, error) {
	return env.PrepareLocal(ctx, e, os.Getenv("PATH"))
}

// Start stages the run directory and launches its supervisor detached.
func (d *Driver) Start(ctx context.Context, spec drivers.RunSpec) (drivers.Handle, error) {
	req := hostrun.NewStageRequest(spec, filepath.Join(d.RunsRoot, spec.RunID))
	req.EnvRoot, req.EnvCacheBytes = d.EnvRoot, d.EnvCacheBytes
	if err := hostrun.Stage(ctx, req); err != nil {
		return nil, err
	}
	return hostrun.Launch(d.AgentCommand, req.RunDir)
}

// Recover re-attaches to a run from its handle.
func (d *Driver) Recover(ctx context.Context, raw drivers.Handle) (drivers.Execution, error) {
	return hostrun.Recover(raw)
}

// kind is "local": no record, nothing to attach or release.
type kind struct{}

func (kind) Name() string { return Name }

func (kind) Attach(ctx context.Context, w *drivers.Workspace, name string, spec, secrets json.RawMessage) (drivers.Target, any, error) {
	return drivers.Target{}, nil, field.Errorf("name", "%q is the machine running Terraform; it needs no attachment", Name)
}

func (kind) Apply(ctx context.Context, w *drivers.Workspace, t drivers.Target) error { return nil }

func (kind) Open(ctx context.Context, w *drivers.Workspace, t drivers.Target) (drivers.Driver, error) {
	return &Driver{RunsRoot: w.RunsRoot(), EnvRoot: w.EnvRoot(), EnvCacheBytes: w.EnvCacheBytes, AgentCommand: w.AgentCommand}, nil
}

func (kind) Describe(ctx context.Context, w *drivers.Workspace, t drivers.Target) (drivers.Description, error) {
	return drivers.Description{Facts: hostrun.ProbeHost(ctx), ProvisioningState: "Succeeded"}, nil
}

func (kind) Release(ctx context.Context, w *drivers.Workspace, t drivers.Target) error { return nil }
