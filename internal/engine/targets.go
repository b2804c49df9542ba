package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
	"github.com/openaml/terraform-provider-aml/internal/engine/target"
	"github.com/openaml/terraform-provider-aml/internal/engine/target/cluster"
	"github.com/openaml/terraform-provider-aml/internal/engine/target/local"
	sshdrv "github.com/openaml/terraform-provider-aml/internal/engine/target/ssh"
)

// Target kinds.
const KindSSH = "ssh"

// ReservedTargetNames cannot be used for attached targets.
var ReservedTargetNames = []string{LocalTarget, "amlcompute"}

// TargetNamePattern is Azure's rule for compute names: 2 to 16 letters, digits
// and '-', starting with a letter.
var TargetNamePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{1,15}$`)

const targetSep = "/targets/"

// runDriver is what the engine needs of a target beyond target.Driver.
type runDriver interface {
	target.Driver
	// PrepareEnvironment checks, before anything is written, that the target can
	// provide the environment, and says how.
	PrepareEnvironment(ctx context.Context, e env.Environment) (env.Launch, error)
	// RunDir is where a run's files live on the target.
	RunDir(runID string) string
}

type localDriver struct{ *local.Driver }

func (d localDriver) PrepareEnvironment(ctx context.Context, e env.Environment) (env.Launch, error) {
	return env.PrepareLocal(ctx, e, os.Getenv("PATH"))
}

func (d localDriver) RunDir(runID string) string { return filepath.Join(d.RunsRoot, runID) }

func (e *Engine) localDriver(s *store.Store) runDriver {
	return localDriver{&local.Driver{
		RunsRoot:      filepath.Join(s.Dir, store.RunsDir),
		EnvRoot:       filepath.Join(s.Dir, EnvsDir),
		EnvCacheBytes: e.opts.EnvCacheMaxBytes,
		AgentCommand:  e.opts.AgentCommand,
	}}
}

// driverFor returns the driver of a compute target of workspace s.
func (e *Engine) driverFor(ctx context.Context, s *store.Store, name string) (runDriver, error) {
	if name == LocalTarget || name == "" {
		return e.localDriver(s), nil
	}
	row, err := s.GetTarget(ctx, name)
	if IsNotFound(err) {
		names, _ := s.TargetNames(ctx)
		return nil, fieldErr("compute_target", "unknown compute target %q; this workspace has: %s", name, strings.Join(append([]string{LocalTarget}, names...), ", "))
	}
	if err != nil {
		return nil, err
	}
	switch row.Kind {
	case KindSSH:
		return e.sshDriver(s, row)
	case cluster.Kind:
		return poolDriver{&cluster.Driver{Pool: e.managedPool(s, name)}}, nil
	default:
		return nil, fmt.Errorf("compute target %q has kind %q, which this provider version does not know", name, row.Kind)
	}
}

func (e *Engine) recoverRun(ctx context.Context, s *store.Store, rec *run.Record) (target.Execution, error) {
	name := rec.Target
	if rec.Pool != "" {
		name = rec.Pool
	}
	drv, err := e.driverFor(ctx, s, name)
	if err != nil {
		return nil, err
	}
	return drv.Recover(ctx, rec.Handle)
}

// RemoteSpec is an SSH host as configured (secrets apart).
type RemoteSpec struct {
	Name                  string      `json:"name"`
	Address               string      `json:"address"`
	Port                  int         `json:"port"`
	Username              string      `json:"username"`
	UseAgent              bool        `json:"use_agent,omitempty"`
	HostKey               string      `json:"host_key,omitempty"` // pinned by the user
	InsecureIgnoreHostKey bool        `json:"insecure_ignore_host_key,omitempty"`
	RemoteRoot            string      `json:"remote_root,omitempty"`
	Bastion               *RemoteSpec `json:"bastion,omitempty"`
}

// Credentials are a host's secrets; kept in the workspace with mode 0600.
type Credentials struct {
	Password   string       `json:"password,omitempty"`
	PrivateKey string       `json:"private_key,omitempty"`
	Passphrase string       `json:"passphrase,omitempty"`
	Bastion    *Credentials `json:"bastion,omitempty"`
}

// targetState is what the engine learned at attach time.
type targetState struct {
	Facts       target.Facts `json:"facts"`
	HostKey     string       `json:"host_key"` // verified key (pinned or first seen)
	Fingerprint string       `json:"fingerprint"`
	RemoteRoot  string       `json:"remote_root"` // absolute
	BastionKey  string       `json:"bastion_host_key,omitempty"`
}

// Target is an attached compute target.
type Target struct {
	ID                string
	WorkspaceID       string
	Name              string
	Kind              string
	Remote            RemoteSpec
	Facts             target.Facts
	HostKey           string
	Fingerprint       string
	RemoteRoot        string
	ProvisioningState string
	CreatedAt         time.Time
}

// TargetID builds "<workspace_id>/targets/<name>".
func TargetID(workspaceID, name string) string { return filepath.Clean(workspaceID) + targetSep + name }

// ParseTargetID splits a target id.
func ParseTargetID(id string) (workspaceID, name string, err error) {
	return parseChildID(id, targetSep, TargetNamePattern, "compute target id", "{name}")
}

func endpoint(spec RemoteSpec, creds Credentials, hostKey string) remote.Endpoint {
	ep := remote.Endpoint{
		Address: spec.Address, Port: spec.Port, User: spec.Username,
		Auth:                  remote.Auth{Password: creds.Password, PrivateKey: []byte(creds.PrivateKey), Passphrase: []byte(creds.Passphrase), UseAgent: spec.UseAgent},
		HostKey:               hostKey,
		InsecureIgnoreHostKey: spec.InsecureIgnoreHostKey,
	}
	if len(creds.PrivateKey) == 0 {
		ep.Auth.PrivateKey = nil
	}
	if len(creds.Passphrase) == 0 {
		ep.Auth.Passphrase = nil
	}
	if spec.Bastion != nil {
		bc := Credentials{}
		if creds.Bastion != nil {
			bc = *creds.Bastion
		}
		b := endpoint(*spec.Bastion, bc, spec.Bastion.HostKey)
		ep.Bastion = &b
	}
	return ep
}

func (e *Engine) sshPool() *remote.Pool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pool == nil {
		e.pool = remote.NewPool()
	}
	return e.pool
}

func (e *Engine) agentPath() string {
	if len(e.opts.AgentCommand) > 0 {
		return e.opts.AgentCommand[0]
	}
	exe, _ := os.Executable()
	return exe
}

func (e *Engine) sshDriver(s *store.Store, row store.TargetRow) (runDriver, error) {
	var spec RemoteSpec
	var st targetState
	var creds Credentials
	if err := json.Unmarshal(row.Spec, &spec); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(row.State, &st); err != nil {
		return nil, err
	}
	if err := s.GetSecrets(row.Name, &creds); err != nil {
		return nil, err
	}
	if spec.Bastion != nil && spec.Bastion.HostKey == "" {
		spec.Bastion.HostKey = st.BastionKey
	}
	return &sshdrv.Driver{
		Pool:          e.sshPool(),
		Endpoint:      endpoint(spec, creds, st.HostKey),
		Root:          st.RemoteRoot,
		LocalRunsRoot: filepath.Join(s.Dir, store.RunsDir),
		Blobs:         snapshot.BlobStore{Root: s.BlobsPath()},
		AgentPath:     e.agentPath(),
		EnvCacheBytes: e.opts.EnvCacheMaxBytes,
	}, nil
}

// AttachRemote connects to an SSH host (verifying its host key, or pinning the
// first one seen), stages the agent, probes the host and records it in the
// workspace. Nothing is recorded when any step fails.
func (e *Engine) AttachRemote(ctx context.Context, workspaceID string, spec RemoteSpec, creds Credentials) (*Target, error) {
	s, err := e.open(ctx, workspaceID)
	if err != nil {
		return nil, fieldErr("workspace_id", "%v", err)
	}
	if !TargetNamePattern.MatchString(spec.Name) {
		return nil, fieldErr("name", "%q is not a valid compute name: use 2 to 16 letters, digits or '-', starting with a letter", spec.Name)
	}
	for _, r := range ReservedTargetNames {
		if strings.EqualFold(spec.Name, r) {
			return nil, fieldErr("name", "%q is reserved; choose another name", spec.Name)
		}
	}
	if existing, err := s.GetTarget(ctx, spec.Name); err == nil {
		return nil, fieldErr("name", "workspace already has a compute target %q (kind %s); names are unique across kinds", spec.Name, existing.Kind)
	}
	if spec.Port == 0 {
		spec.Port = 22
	}
	if spec.RemoteRoot != "" && !path.IsAbs(spec.RemoteRoot) {
		return nil, fieldErr("remote_root", "%q must be an absolute path on the host", spec.RemoteRoot)
	}
	ep := endpoint(spec, creds, spec.HostKey)
	c, err := e.sshPool().Get(ctx, ep)
	if err != nil {
		return nil, attachError(err)
	}
	st := targetState{HostKey: c.HostKey(), Fingerprint: c.Fingerprint()}
	if ep.Bastion != nil {
		if bc, err := e.sshPool().Get(ctx, *ep.Bastion); err == nil {
			st.BastionKey = bc.HostKey()
		}
	}
	// The agent is this binary: the host must be able to run it.
	out, err := c.Output(ctx, "uname -s -m; printf '%s\\n' \"$HOME\"")
	if err != nil {
		return nil, fmt.Errorf("probing %s: %w", ep.Key(), err)
	}
	lines := strings.Fields(string(out))
	if len(lines) < 2 {
		return nil, fmt.Errorf("probing %s: unexpected answer %q", ep.Key(), string(out))
	}
	goos, goarch := strings.ToLower(lines[0]), unameArch(lines[1])
	if goos != runtime.GOOS || goarch != runtime.GOARCH {
		return nil, fieldErr("address", "%s is %s/%s; this provider can drive only %s/%s hosts (it runs its own binary there as the agent)", ep.Key(), goos, goarch, runtime.GOOS, runtime.GOARCH)
	}
	st.RemoteRoot = spec.RemoteRoot
	if st.RemoteRoot == "" {
		if len(lines) < 3 || !path.IsAbs(lines[2]) {
			return nil, fieldErr("remote_root", "the host reports no absolute $HOME; set remote_root")
		}
		st.RemoteRoot = path.Join(lines[2], ".aml")
	}
	probe := "mkdir -p " + remote.ShellQuote(st.RemoteRoot) + " && test -w " + remote.ShellQuote(st.RemoteRoot)
	if _, err := c.Output(ctx, probe); err != nil {
		return nil, fieldErr("remote_root", "%s is not writable by %s on %s: %v", st.RemoteRoot, spec.Username, ep.Key(), err)
	}
	drv := &sshdrv.Driver{Pool: e.sshPool(), Endpoint: ep, Root: st.RemoteRoot, AgentPath: e.agentPath()}
	if st.Facts, err = drv.Probe(ctx); err != nil {
		return nil, fmt.Errorf("probing %s: %w", ep.Key(), err)
	}
	if len(st.Facts.PythonVersions) == 0 {
		return nil, fieldErr("address", "no python3 found on %s (PATH=%s); install Python 3 on the host", ep.Key(), st.Facts.PathEnv)
	}
	specJSON, _ := json.Marshal(spec)
	stateJSON, _ := json.Marshal(st)
	if err := s.PutSecrets(spec.Name, creds); err != nil {
		return nil, err
	}
	if err := s.PutTarget(ctx, store.TargetRow{Name: spec.Name, Kind: KindSSH, Spec: specJSON, State: stateJSON}); err != nil {
		_ = s.DeleteTarget(ctx, spec.Name)
		return nil, err
	}
	return e.ReadTarget(ctx, TargetID(s.Dir, spec.Name))
}

func attachError(err error) error {
	switch {
	case errors.Is(err, remote.ErrHostKeyMismatch):
		return fieldErr("host_key", "%v", err)
	case errors.Is(err, remote.ErrAuth):
		return fieldErr("username", "%v", err)
	case errors.Is(err, remote.ErrUnreachable):
		return fieldErr("address", "%v", err)
	}
	return err
}

func unameArch(m string) string {
	switch m {
	case "x86_64", "amd64":
		return "amd64"
	case "aarch64", "arm64":
		return "arm64"
	}
	return m
}

// ReadTarget returns a wrapped ErrNotFound for an unknown target.
func (e *Engine) ReadTarget(ctx context.Context, id string) (*Target, error) {
	wsID, name, err := ParseTargetID(id)
	if err != nil {
		return nil, err
	}
	s, err := e.open(ctx, wsID)
	if err != nil {
		return nil, err
	}
	row, err := s.GetTarget(ctx, name)
	if err != nil {
		return nil, err
	}
	t := &Target{ID: TargetID(s.Dir, name), WorkspaceID: s.Dir, Name: name, Kind: row.Kind, CreatedAt: row.CreatedAt, ProvisioningState: "Succeeded"}
	var st targetState
	if err := json.Unmarshal(row.Spec, &t.Remote); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(row.State, &st); err != nil {
		return nil, err
	}
	t.Facts, t.HostKey, t.Fingerprint, t.RemoteRoot = st.Facts, st.HostKey, st.Fingerprint, st.RemoteRoot
	return t, nil
}

// DetachTarget removes a target from the workspace. It refuses while runs are
// active on it unless force, in which case they are canceled first. Files on the
// host are never deleted.
func (e *Engine) DetachTarget(ctx context.Context, id string, force bool) error {
	wsID, name, err := ParseTargetID(id)
	if err != nil {
		return err
	}
	s, err := e.open(ctx, wsID)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	ids, err := s.ActiveRunsOn(ctx, name)
	if err != nil {
		return err
	}
	active, err := e.stillActive(ctx, s, ids)
	if err != nil {
		return err
	}
	if len(active) > 0 && !force {
		return fmt.Errorf("compute target %q has %d active run(s) (%s); destroy them first, or set force_detach = true to cancel them", name, len(active), strings.Join(active, ", "))
	}
	for _, runID := range active {
		if _, err := e.cancel(ctx, s, runID, run.ReasonCanceled); err != nil {
			return fmt.Errorf("canceling run %s before detaching: %w", runID, err)
		}
	}
	return s.DeleteTarget(ctx, name)
}

// TargetCredentials returns a target's stored secrets (for import).
func (e *Engine) TargetCredentials(ctx context.Context, id string) (Credentials, error) {
	var c Credentials
	wsID, name, err := ParseTargetID(id)
	if err != nil {
		return c, err
	}
	s, err := e.open(ctx, wsID)
	if err != nil {
		return c, err
	}
	err = s.GetSecrets(name, &c)
	return c, err
}

// TargetStatus is any compute target's live view (data source aml_compute_target).
type TargetStatus struct {
	ID, Name, Kind    string
	ProvisioningState string
	Facts             target.Facts
	Address           string
	Pool              *Compute // managed pools only
}

// ReadTargetStatus describes any target by name, with live node counts for
// pools; "local" is the machine running the engine.
func (e *Engine) ReadTargetStatus(ctx context.Context, workspaceID, name string) (*TargetStatus, error) {
	s, err := e.open(ctx, workspaceID)
	if err != nil {
		return nil, fieldErr("workspace_id", "%v", err)
	}
	if name == LocalTarget {
		f, err := (&local.Driver{}).Probe(ctx)
		if err != nil {
			return nil, err
		}
		return &TargetStatus{ID: TargetID(s.Dir, name), Name: name, Kind: "local", ProvisioningState: "Succeeded", Facts: f}, nil
	}
	row, err := s.GetTarget(ctx, name)
	if IsNotFound(err) {
		names, _ := s.TargetNames(ctx)
		return nil, fieldErr("name", "unknown compute target %q; this workspace has: %s", name, strings.Join(append([]string{LocalTarget}, names...), ", "))
	}
	if err != nil {
		return nil, err
	}
	ts := &TargetStatus{ID: TargetID(s.Dir, name), Name: name, Kind: row.Kind, ProvisioningState: "Succeeded"}
	switch row.Kind {
	case KindSSH:
		t, err := e.ReadTarget(ctx, ts.ID)
		if err != nil {
			return nil, err
		}
		ts.Facts, ts.Address = t.Facts, t.Remote.Address
	case cluster.Kind:
		c, err := e.ReadCompute(ctx, ts.ID)
		if err != nil {
			return nil, err
		}
		ts.Pool = c
		size, _ := cluster.LookupSize(c.Spec.VMSize)
		ts.Facts = target.Facts{Cores: size.Cores, MemoryBytes: size.MemoryMB << 20, GPUs: size.GPUs, OS: runtime.GOOS, Arch: runtime.GOARCH}
	}
	return ts, nil
}
