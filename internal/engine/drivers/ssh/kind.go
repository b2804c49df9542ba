// Package ssh is the kind of attached SSH hosts (aml_remote_compute): a
// machine reached over SSH that runs the provider's own binary as the agent
// (package sshhost) and so the very host runtime a local run uses.
package ssh

import (
	"context"
	"encoding/json"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/sshhost"
)

// Name is the kind of attached SSH hosts (aml_remote_compute).
const Name = "ssh"

func init() { drivers.Register(kind{}) }

// The host's configuration, secrets and attach-time state.
type (
	Spec        = sshhost.Spec
	Credentials = sshhost.Credentials
	State       = sshhost.State
)

type kind struct{}

func (kind) Name() string { return Name }

// Attach connects, stages the agent and probes the host.
func (kind) Attach(ctx context.Context, w *drivers.Workspace, name string, rawSpec, rawSecrets json.RawMessage) (drivers.Target, any, error) {
	var spec Spec
	creds, err := sshhost.DecodeAttach(rawSpec, rawSecrets, &spec)
	if err != nil {
		return drivers.Target{}, nil, err
	}
	spec.Name = name
	st, _, err := sshhost.Connect(ctx, w, &spec, creds)
	if err != nil {
		return drivers.Target{}, nil, err
	}
	specJSON, _ := json.Marshal(spec)
	stateJSON, _ := json.Marshal(st)
	return drivers.Target{Spec: specJSON, State: stateJSON}, creds, nil
}

func (kind) Apply(ctx context.Context, w *drivers.Workspace, t drivers.Target) error { return nil }

func decode(t drivers.Target) (Spec, State, error) { return drivers.Decode[Spec, State](t) }

// Open builds the driver from the record and the stored credentials.
func (kind) Open(ctx context.Context, w *drivers.Workspace, t drivers.Target) (drivers.Driver, error) {
	spec, st, err := decode(t)
	if err != nil {
		return nil, err
	}
	return sshhost.Open(w, t.Name, spec, st)
}

// Describe reports the facts recorded at attach time.
func (kind) Describe(ctx context.Context, w *drivers.Workspace, t drivers.Target) (drivers.Description, error) {
	spec, st, err := decode(t)
	if err != nil {
		return drivers.Description{}, err
	}
	return drivers.Description{Facts: st.Facts, Address: spec.Address, ProvisioningState: "Succeeded"}, nil
}

// Release holds nothing: files on the host are never deleted.
func (kind) Release(ctx context.Context, w *drivers.Workspace, t drivers.Target) error { return nil }
