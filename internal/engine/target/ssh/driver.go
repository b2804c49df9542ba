// Package ssh is the driver for attached SSH hosts (aml_remote_compute). The
// engine stages its own binary on the host, content-addressed under
// <remote_root>/bin, and drives runs through `agent <command>` host commands
// (package hostagent) over one multiplexed connection: the host runs the very
// supervisor, environment builder and file layout a local run uses.
package ssh

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/engine/target"
	"github.com/openaml/terraform-provider-aml/internal/engine/target/hostagent"
	"github.com/openaml/terraform-provider-aml/internal/engine/target/local"
)

// Driver runs on one attached host.
type Driver struct {
	Pool     *remote.Pool
	Endpoint remote.Endpoint
	// Root is the absolute remote_root on the host.
	Root string
	// LocalRunsRoot is the workspace's runs directory on the engine host, where
	// outputs and logs are brought back.
	LocalRunsRoot string
	// Blobs is the engine's blob store (source of uploads).
	Blobs snapshot.BlobStore
	// AgentPath is the binary to stage on the host (the running provider).
	AgentPath     string
	EnvCacheBytes int64
}

var _ target.Driver = (*Driver)(nil)

// Paths on the host.
func (d *Driver) blobsRoot() string            { return path.Join(d.Root, "blobs") }
func (d *Driver) envRoot() string              { return path.Join(d.Root, "envs") }
func (d *Driver) RunDir(runID string) string   { return path.Join(d.Root, "runs", runID) }
func (d *Driver) localDir(runID string) string { return d.LocalRunsRoot + "/" + runID }

// handle is what the run record keeps.
type handle struct {
	Host     string          `json:"host"`
	RunDir   string          `json:"run_dir"`
	LocalDir string          `json:"local_dir"`
	Inner    json.RawMessage `json:"inner"` // the local driver's handle, on the host
}

func (d *Driver) client(ctx context.Context) (*remote.Client, error) {
	return d.Pool.Get(ctx, d.Endpoint)
}

// agentCmd is the shell command line of a host command.
func (d *Driver) agentCmd(ctx context.Context, c *remote.Client, args ...string) (string, error) {
	bin, err := d.ensureAgent(ctx, c)
	if err != nil {
		return "", err
	}
	q := []string{remote.ShellQuote(bin), "agent"}
	for _, a := range args {
		q = append(q, remote.ShellQuote(a))
	}
	return strings.Join(q, " "), nil
}

// call runs a host command with a JSON (or raw) stdin and decodes its JSON
// stdout into out. A FieldError the host reports comes back as *env.FieldError.
func (d *Driver) call(ctx context.Context, in any, out any, args ...string) error {
	c, err := d.client(ctx)
	if err != nil {
		return err
	}
	cmd, err := d.agentCmd(ctx, c, args...)
	if err != nil {
		return err
	}
	var stdin io.Reader
	switch v := in.(type) {
	case nil:
	case io.Reader:
		stdin = v
	case []byte:
		stdin = bytes.NewReader(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		stdin = bytes.NewReader(b)
	}
	var stdout, stderr bytes.Buffer
	var sink io.Writer = &stdout
	if w, ok := out.(io.Writer); ok {
		sink = w // streamed (logs, outputs archives)
	}
	err = c.Run(ctx, cmd, stdin, sink, &stderr)
	var ee *remote.ExitError
	if errors.As(err, &ee) && ee.Status == hostagent.ExitFieldError {
		var fe env.FieldError
		if jerr := json.Unmarshal(stdout.Bytes(), &fe); jerr == nil && fe.Attr != "" {
			return &fe
		}
	}
	if err != nil {
		return fmt.Errorf("on %s: agent %s: %w", d.Endpoint.Key(), args[0], err)
	}
	if out == nil || sink != &stdout {
		return nil
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("on %s: agent %s answered %q: %w", d.Endpoint.Key(), args[0], truncate(stdout.String(), 200), err)
	}
	return nil
}

var (
	agentSumMu sync.Mutex
	agentSums  = map[string]string{}
)

// agentSum hashes the agent binary once per process.
func agentSum(p string) (string, error) {
	agentSumMu.Lock()
	defer agentSumMu.Unlock()
	if s, ok := agentSums[p]; ok {
		return s, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	s := hex.EncodeToString(h.Sum(nil))
	agentSums[p] = s
	return s, nil
}

// ensureAgent stages the agent binary on the host once per content hash.
func (d *Driver) ensureAgent(ctx context.Context, c *remote.Client) (string, error) {
	sum, err := agentSum(d.AgentPath)
	if err != nil {
		return "", fmt.Errorf("hashing the agent binary: %w", err)
	}
	bin := path.Join(d.Root, "bin", sum[:16], "terraform-provider-aml")
	if err := c.Run(ctx, "test -x "+remote.ShellQuote(bin), nil, io.Discard, io.Discard); err == nil {
		return bin, nil
	}
	if _, err := c.Output(ctx, "mkdir -p "+remote.ShellQuote(path.Dir(bin))); err != nil {
		return "", fmt.Errorf("creating %s on %s: %w", path.Dir(bin), d.Endpoint.Key(), err)
	}
	f, err := os.Open(d.AgentPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := c.Upload(ctx, bin, f, 0o755); err != nil {
		return "", fmt.Errorf("staging the agent on %s: %w", d.Endpoint.Key(), err)
	}
	return bin, nil
}

// Probe connects, stages the agent and describes the host.
func (d *Driver) Probe(ctx context.Context) (target.Facts, error) {
	var f target.Facts
	err := d.call(ctx, nil, &f, "probe")
	return f, err
}

// PrepareEnvironment checks on the host that it can provide the environment.
func (d *Driver) PrepareEnvironment(ctx context.Context, e env.Environment) (env.Launch, error) {
	var l env.Launch
	err := d.call(ctx, e, &l, "prepare-env")
	return l, err
}

// Start sends the blobs the host lacks, then stages and launches the run there.
func (d *Driver) Start(ctx context.Context, spec target.RunSpec) (target.Handle, error) {
	var missing []string
	if err := d.call(ctx, spec.Manifest, &missing, "blobs-missing", d.blobsRoot()); err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(hostagent.SendBlobs(d.Blobs, missing, pw)) }()
		err := d.call(ctx, pr, nil, "blobs-receive", d.blobsRoot())
		pr.CloseWithError(err)
		if err != nil {
			return nil, fmt.Errorf("uploading %d file(s) of the snapshot: %w", len(missing), err)
		}
	}
	req := local.StageRequest{
		RunID:          spec.RunID,
		RunDir:         d.RunDir(spec.RunID),
		Manifest:       spec.Manifest,
		BlobsRoot:      d.blobsRoot(),
		Argv:           spec.Argv,
		Env:            spec.Env,
		Environment:    spec.Environment,
		EnvRoot:        d.envRoot(),
		EnvCacheBytes:  d.EnvCacheBytes,
		MaxDurationSec: spec.MaxDuration.Seconds(),
		GraceSec:       spec.Grace.Seconds(),
	}
	var inner json.RawMessage
	if err := d.call(ctx, req, &inner, "start"); err != nil {
		return nil, err
	}
	return json.Marshal(handle{Host: d.Endpoint.Key(), RunDir: req.RunDir, LocalDir: d.localDir(spec.RunID), Inner: inner})
}

// Recover re-attaches to a run from its handle (no connection is made yet).
func (d *Driver) Recover(ctx context.Context, raw target.Handle) (target.Execution, error) {
	var h handle
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("ssh run handle: %w", err)
	}
	if h.RunDir == "" || len(h.Inner) == 0 {
		return nil, errors.New("ssh run handle is incomplete")
	}
	return &execution{d: d, h: h}, nil
}

type execution struct {
	d *Driver
	h handle
}

func (e *execution) Status(ctx context.Context) (target.State, error) {
	var st target.State
	err := e.d.call(ctx, []byte(e.h.Inner), &st, "status")
	return st, err
}

// Wait polls the host. A lost connection does not end the wait: the run goes
// on on the host, and the pool redials until ctx ends.
func (e *execution) Wait(ctx context.Context) (target.State, error) {
	delay := 100 * time.Millisecond
	var last target.State
	for {
		st, err := e.Status(ctx)
		switch {
		case err == nil:
			last = st
			if st.Status.Terminal() {
				return st, nil
			}
		case !Transient(err):
			return last, err
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(delay):
		}
		if delay < time.Second {
			delay = delay * 3 / 2
		}
	}
}

// Transient reports errors after which the run is still fine on its host.
func Transient(err error) bool {
	return errors.Is(err, remote.ErrUnreachable) || errors.Is(err, remote.ErrConnectionLost)
}

func (e *execution) Logs(ctx context.Context, offset int64) ([]byte, int64, error) {
	var buf bytes.Buffer
	err := e.d.call(ctx, []byte(e.h.Inner), &buf, "logs", strconv.FormatInt(offset, 10))
	return buf.Bytes(), offset + int64(buf.Len()), err
}

func (e *execution) Cancel(ctx context.Context, grace time.Duration, reason string) error {
	return e.d.call(ctx, []byte(e.h.Inner), nil, "cancel", strconv.FormatFloat(grace.Seconds(), 'f', -1, 64), reason)
}

// maxCollectBytes bounds what a host may send back as outputs and logs.
const maxCollectBytes = 2 << 30

// Collect reads metrics and the output listing on the host, then brings
// outputs/ and logs/ back into the run's local directory, checking every path.
func (e *execution) Collect(ctx context.Context) (target.Collected, error) {
	var c target.Collected
	if err := e.d.call(ctx, []byte(e.h.Inner), &c, "collect"); err != nil {
		return c, err
	}
	var clean []string
	for _, f := range c.OutputFiles {
		if p, err := snapshot.SanitizeRelPath(f); err == nil {
			clean = append(clean, p)
		}
	}
	c.OutputFiles = clean
	if err := os.MkdirAll(e.h.LocalDir, 0o755); err != nil {
		return c, err
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- hostagent.Unpack(pr, e.h.LocalDir, maxCollectBytes) }()
	err := e.d.call(ctx, nil, pw, "pack", e.h.RunDir)
	pw.CloseWithError(err)
	if uerr := <-done; err == nil {
		err = uerr
	}
	if err != nil {
		return c, fmt.Errorf("bringing back outputs of %s: %w", e.h.RunDir, err)
	}
	l := local.Layout{Dir: e.h.LocalDir}
	c.OutputsPath, c.LogPath = l.Outputs(), l.StdLog()
	return c, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
