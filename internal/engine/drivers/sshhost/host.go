package sshhost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"runtime"
	"slices"
	"strings"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
)

// Spec is an SSH host as configured (secrets apart).
type Spec struct {
	Name                  string `json:"name"`
	Address               string `json:"address"`
	Port                  int    `json:"port"`
	Username              string `json:"username"`
	UseAgent              bool   `json:"use_agent,omitempty"`
	HostKey               string `json:"host_key,omitempty"` // pinned by the user
	InsecureIgnoreHostKey bool   `json:"insecure_ignore_host_key,omitempty"`
	RemoteRoot            string `json:"remote_root,omitempty"`
	Bastion               *Spec  `json:"bastion,omitempty"`
}

// Credentials are a host's secrets; the workspace keeps them with mode 0600.
type Credentials struct {
	Password   string       `json:"password,omitempty"`
	PrivateKey string       `json:"private_key,omitempty"`
	Passphrase string       `json:"passphrase,omitempty"`
	Bastion    *Credentials `json:"bastion,omitempty"`
	// WriteOnly records that they came from write-only attributes, so an
	// import puts none of them into state.
	WriteOnly bool `json:"write_only,omitempty"`
}

// State is what attaching learned about the host.
type State struct {
	Facts       drivers.Facts `json:"facts"`
	HostKey     string        `json:"host_key"` // verified key (pinned or first seen)
	Fingerprint string        `json:"fingerprint"`
	RemoteRoot  string        `json:"remote_root"` // absolute
	BastionKey  string        `json:"bastion_host_key,omitempty"`
}

// Endpoint is how the transport reaches a host of this spec.
func Endpoint(spec Spec, creds Credentials, hostKey string) remote.Endpoint {
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
		b := Endpoint(*spec.Bastion, bc, spec.Bastion.HostKey)
		ep.Bastion = &b
	}
	return ep
}

// Connect reaches a new host: it verifies the host key (or pins the first one
// seen), checks the host can run the agent (same OS and architecture), makes
// remote_root, stages the agent and probes the host. Errors in the
// configuration are *field.Error naming the attribute.
func Connect(ctx context.Context, w *drivers.Workspace, spec *Spec, creds Credentials) (State, *Driver, error) {
	if spec.Port == 0 {
		spec.Port = 22
	}
	if spec.RemoteRoot != "" && !path.IsAbs(spec.RemoteRoot) {
		return State{}, nil, field.Errorf("remote_root", "%q must be an absolute path on the host", spec.RemoteRoot)
	}
	ep := Endpoint(*spec, creds, spec.HostKey)
	sum := make(chan string, 1)
	go func() { // hash the agent binary while connecting
		s, _ := agentSum(w.AgentPath())
		sum <- s
	}()
	c, err := w.SSH.Get(ctx, ep)
	if err != nil {
		return State{}, nil, attachError(err)
	}
	st := State{HostKey: c.HostKey(), Fingerprint: c.Fingerprint()}
	if ep.Bastion != nil {
		if bc, err := w.SSH.Get(ctx, *ep.Bastion); err == nil {
			st.BastionKey = bc.HostKey()
		}
	}
	// The agent is this binary: the host must be able to run it. One session
	// (each costs round trips on a slow link) reports the host's system,
	// architecture and $HOME and, on a host of ours, creates remote_root,
	// checks that it is writable and runs the staged agent's probe; the answer
	// is judged here. When the probe does not answer (no agent staged yet, or
	// anything else), the driver's Probe runs it again, staging the agent.
	probe := ""
	if s := <-sum; len(s) >= 16 {
		probe = `; exec "$r"/` + agentRel(s) + ` agent probe`
	}
	root := `case "$HOME" in /*) ;; *) exit 0;; esac; r="$HOME/.aml"`
	if spec.RemoteRoot != "" {
		root = "r=" + remote.ShellQuote(spec.RemoteRoot)
	}
	// sh -c: the script is POSIX sh whatever the user's login shell.
	out, err := c.Output(ctx, "sh -c "+remote.ShellQuote(`u=$(uname -s -m); printf '%s\n' "$u" "$HOME"; `+
		`case "$u" in `+unamePattern()+`) ;; *) exit 0;; esac; `+root+`; `+
		`if m=$(mkdir -p "$r" 2>&1) && test -w "$r"; then echo writable`+probe+`; else printf 'not writable: %s\n' "$m"; fi`))
	var answer []byte // the agent's probe, after the third line
	if i := nthLine(out, 3); i >= 0 && bytes.Equal(bytes.TrimSpace(out[nthLine(out, 2):i]), []byte("writable")) {
		out, answer = out[:i], out[i:]
		if err != nil || len(bytes.TrimSpace(answer)) == 0 {
			err, answer = nil, nil
		}
	}
	if err != nil {
		return State{}, nil, fmt.Errorf("probing %s: %w", ep.Key(), err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	sys := strings.Fields(lines[0])
	if len(sys) < 2 {
		return State{}, nil, fmt.Errorf("probing %s: unexpected answer %q", ep.Key(), string(out))
	}
	goos, goarch := strings.ToLower(sys[0]), unameArch(sys[1])
	if goos != runtime.GOOS || goarch != runtime.GOARCH {
		return State{}, nil, field.Errorf("address", "%s is %s/%s; this provider can drive only %s/%s hosts (it runs its own binary there as the agent)", ep.Key(), goos, goarch, runtime.GOOS, runtime.GOARCH)
	}
	home := ""
	if len(lines) > 1 {
		home = lines[1]
	}
	st.RemoteRoot = spec.RemoteRoot
	if st.RemoteRoot == "" {
		if !path.IsAbs(home) {
			return State{}, nil, field.Errorf("remote_root", "the host reports no absolute $HOME; set remote_root")
		}
		st.RemoteRoot = path.Join(home, ".aml")
	}
	if verdict := strings.Join(lines[min(2, len(lines)):], "\n"); verdict != "writable" {
		why := strings.TrimSpace(strings.TrimPrefix(verdict, "not writable:"))
		if why == "" {
			why = "mkdir -p and test -w failed"
		}
		return State{}, nil, field.Errorf("remote_root", "%s is not writable by %s on %s: %s", st.RemoteRoot, spec.Username, ep.Key(), truncate(why, 500))
	}
	drv := &Driver{Pool: w.SSH, Endpoint: ep, Root: st.RemoteRoot, AgentPath: w.AgentPath()}
	if answer == nil || json.Unmarshal(answer, &st.Facts) != nil {
		if st.Facts, err = drv.Probe(ctx); err != nil {
			return State{}, nil, fmt.Errorf("probing %s: %w", ep.Key(), err)
		}
	}
	if len(st.Facts.PythonVersions) == 0 {
		return State{}, nil, field.Errorf("address", "no python3 found on %s (PATH=%s); install Python 3 on the host", ep.Key(), st.Facts.PathEnv)
	}
	return st, drv, nil
}

// DecodeAttach reads a kind's attach request whose spec embeds Spec.
func DecodeAttach(rawSpec, rawSecrets json.RawMessage, spec any) (Credentials, error) {
	var creds Credentials
	if err := json.Unmarshal(rawSpec, spec); err != nil {
		return creds, err
	}
	if len(rawSecrets) > 0 {
		if err := json.Unmarshal(rawSecrets, &creds); err != nil {
			return creds, err
		}
	}
	return creds, nil
}

func attachError(err error) error {
	switch {
	case errors.Is(err, remote.ErrHostKeyMismatch):
		return field.Errorf("host_key", "%v", err)
	case errors.Is(err, remote.ErrPassphrase):
		return field.Errorf("private_key_passphrase", "%v", err)
	case errors.Is(err, remote.ErrPrivateKey):
		return field.Errorf("private_key", "%v", err)
	case errors.Is(err, remote.ErrAuth):
		return field.Errorf("username", "%v", err)
	case errors.Is(err, remote.ErrUnreachable):
		return field.Errorf("address", "%v", err)
	}
	return err
}

// nthLine is the offset just past the n-th newline of b (n >= 1), or -1.
func nthLine(b []byte, n int) int {
	off := 0
	for ; n > 0; n-- {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return -1
		}
		off += i + 1
	}
	return off
}

// unamePattern is the shell case pattern of `uname -s -m` on a host whose
// system and architecture are this program's (unameArch's inverse).
func unamePattern() string {
	sys := strings.ToUpper(runtime.GOOS[:1]) + runtime.GOOS[1:]
	var alts []string
	for _, m := range []string{"x86_64", "amd64", "aarch64", "arm64", runtime.GOARCH} {
		if unameArch(m) == runtime.GOARCH && !slices.Contains(alts, `"`+sys+" "+m+`"`) {
			alts = append(alts, `"`+sys+" "+m+`"`)
		}
	}
	return strings.Join(alts, "|")
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

// Open builds the driver of a recorded host from its spec and state and the
// workspace's stored credentials.
func Open(w *drivers.Workspace, name string, spec Spec, st State) (*Driver, error) {
	var creds Credentials
	if err := w.Store.GetSecrets(name, &creds); err != nil {
		return nil, err
	}
	if spec.Bastion != nil && spec.Bastion.HostKey == "" {
		spec.Bastion.HostKey = st.BastionKey
	}
	return &Driver{
		Pool:          w.SSH,
		Endpoint:      Endpoint(spec, creds, st.HostKey),
		Root:          st.RemoteRoot,
		LocalRunsRoot: w.RunsRoot(),
		Blobs:         w.Blobs(),
		AgentPath:     w.AgentPath(),
		EnvCacheBytes: w.EnvCacheBytes,

		CollectMaxBytes: w.CollectMaxBytes,
	}, nil
}
