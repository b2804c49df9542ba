// Package ssh is the driver for attached SSH hosts (aml_remote_compute). The
// engine stages its own binary on the host, content-addressed under
// <remote_root>/bin, and drives runs through `agent <command>` host commands
// (package hostagent) over one multiplexed connection: the host runs the very
// supervisor, environment builder and file layout a local run uses.
package sshhost

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

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/hostagent"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
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
	// CollectMaxBytes bounds what a run's outputs and logs may bring back
	// (default DefaultCollectMaxBytes).
	CollectMaxBytes int64
}

var _ drivers.Driver = (*Driver)(nil)

// Paths on the host.
func (d *Driver) blobsRoot() string            { return path.Join(d.Root, "blobs") }
func (d *Driver) envRoot() string              { return path.Join(d.Root, "envs") }
func (d *Driver) sparesRoot() string           { return path.Join(d.Root, "spares") }
func (d *Driver) RunDir(runID string) string   { return path.Join(d.Root, "runs", runID) }
func (d *Driver) localDir(runID string) string { return d.LocalRunsRoot + "/" + runID }

// manifestFile is where `blobs-missing` keeps a run's manifest for its `start`.
func (d *Driver) manifestFile(runID string) string {
	return path.Join(d.Root, "manifests", runID+".manifest")
}

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

// Output runs a plain shell command on the host (over the pooled connection)
// and returns its stdout. Kinds built on this driver use it for their own
// probes and commands; a lost link is ErrUnreachable.
func (d *Driver) Output(ctx context.Context, cmd string) ([]byte, error) {
	c, err := d.client(ctx)
	if err == nil {
		var out []byte
		if out, err = c.Output(ctx, cmd); err == nil {
			return out, nil
		}
	}
	if errors.Is(err, remote.ErrUnreachable) || errors.Is(err, remote.ErrConnectionLost) {
		return nil, drivers.Unreachable(err)
	}
	return nil, err
}

// RunDirOf is the run directory on the host that a handle of this driver names.
func RunDirOf(raw drivers.Handle) (string, error) {
	var h handle
	if err := json.Unmarshal(raw, &h); err != nil || h.RunDir == "" {
		return "", fmt.Errorf("ssh run handle: no run directory (%v)", err)
	}
	return h.RunDir, nil
}

// agentCmd is the shell command line of a host command. It goes through
// `sh -c 'exec ...'` so that a missing agent ends it with status 127 whatever
// the login shell, and the agent still replaces the shell.
func agentCmd(bin string, args []string) string {
	q := []string{"exec", remote.ShellQuote(bin), "agent"}
	for _, a := range args {
		q = append(q, remote.ShellQuote(a))
	}
	return "sh -c " + remote.ShellQuote(strings.Join(q, " "))
}

// streamInput is a call's stdin produced by a function, once per attempt. Its
// context ends when the attempt's command has ended.
type streamInput func(ctx context.Context, w io.Writer) error

// stdinSource opens a call's stdin, afresh for each attempt. done releases
// it once the command has ended; it returns the producer's error, if any.
type stdinSource func() (r io.Reader, done func() error)

// inputOf turns a call's input into a stdinSource: nil (empty), []byte (sent
// as is), a streamInput, or any other value, sent as JSON (gzipped when large).
func inputOf(in any) (stdinSource, error) {
	var b []byte
	switch v := in.(type) {
	case nil:
		return func() (io.Reader, func() error) { return nil, func() error { return nil } }, nil
	case streamInput:
		return func() (io.Reader, func() error) {
			pr, pw := io.Pipe()
			werr := make(chan error, 1)
			sctx, stop := context.WithCancel(context.Background())
			go func() {
				err := v(sctx, pw)
				pw.CloseWithError(err)
				werr <- err
			}()
			return pr, func() error {
				// Unblock the producer if the command stopped reading.
				stop()
				pr.CloseWithError(errStdinClosed)
				if err := <-werr; err != nil && !errors.Is(err, errStdinClosed) {
					return err
				}
				return nil
			}
		}, nil
	case []byte:
		b = v
	case io.Reader:
		return nil, errors.New("ssh driver: a call's stream input must be a streamInput, so that it can be sent again")
	default:
		var err error
		if b, err = hostagent.EncodeInput(v); err != nil {
			return nil, err
		}
	}
	return func() (io.Reader, func() error) { return bytes.NewReader(b), func() error { return nil } }, nil
}

var errStdinClosed = errors.New("the remote command no longer reads its input")

// call runs a host command with a stdin (see inputOf) and decodes its JSON
// stdout into out, or streams it into out when out is an io.Writer. A
// FieldError the host reports comes back as *env.FieldError.
//
// The agent is not looked for first: it is content-addressed, so it is
// normally there. When the shell answers "command not found" (exit status 127,
// nothing on stdout), the agent is staged (the host may be new, or its
// remote_root wiped) and the command run once more.
func (d *Driver) call(ctx context.Context, in any, out any, args ...string) error {
	sum := make(chan error, 1)
	var bin string
	go func() { // hash the agent binary while connecting
		var err error
		bin, err = d.agentBin()
		sum <- err
	}()
	c, err := d.client(ctx)
	if serr := <-sum; err == nil && serr != nil {
		err = fmt.Errorf("hashing the agent binary: %w", serr)
	}
	if err != nil {
		return err
	}
	open, err := inputOf(in)
	if err != nil {
		return err
	}
	var stdout, stderr bytes.Buffer
	var sink io.Writer = &stdout
	if w, ok := out.(io.Writer); ok {
		sink = w // streamed (logs, outputs archives)
	}
	cmd := agentCmd(bin, args)
	attempt := func() error {
		stdout.Reset()
		stderr.Reset()
		cw := &countingWriter{w: sink}
		stdin, done := open()
		err := c.Run(ctx, cmd, stdin, cw, &stderr)
		if werr := done(); werr != nil && err != nil {
			err = fmt.Errorf("%w (sending its input: %v)", err, werr)
		}
		if cw.n == 0 && isCommandNotFound(err) {
			return errAgentMissing{err}
		}
		return err
	}
	st := agentStateOf(d.Endpoint.Key(), bin)
	gen := st.generation()
	err = attempt()
	if _, ok := err.(errAgentMissing); ok {
		if serr := d.restage(ctx, c, bin, st, gen); serr != nil {
			return serr
		}
		err = attempt()
		if missing, ok := err.(errAgentMissing); ok {
			err = missing.err
		}
	}
	var ee *remote.ExitError
	if errors.As(err, &ee) && ee.Status == hostagent.ExitFieldError {
		var fe field.Error
		if jerr := json.Unmarshal(stdout.Bytes(), &fe); jerr == nil && fe.Attr != "" {
			return &fe
		}
	}
	if errors.Is(err, remote.ErrUnreachable) || errors.Is(err, remote.ErrConnectionLost) {
		// The host is out of reach; a run there goes on.
		return drivers.Unreachable(fmt.Errorf("on %s: agent %s: %w", d.Endpoint.Key(), args[0], err))
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

// exitCommandNotFound is a POSIX shell's exit status for a command it cannot
// find.
const exitCommandNotFound = 127

func isCommandNotFound(err error) bool {
	var ee *remote.ExitError
	return errors.As(err, &ee) && ee.Status == exitCommandNotFound
}

// errAgentMissing marks an attempt that found no agent on the host.
type errAgentMissing struct{ err error }

func (e errAgentMissing) Error() string { return e.err.Error() }
func (e errAgentMissing) Unwrap() error { return e.err }

type countingWriter struct {
	w io.Writer
	n int64
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return n, err
}

// agentState serializes the staging of one agent binary on one host, so
// concurrent calls that all found it missing upload it once.
type agentState struct {
	mu  sync.Mutex
	gen uint64 // bumped at each (re)staging
}

var (
	agentStatesMu sync.Mutex
	agentStates   = map[string]*agentState{}
)

func agentStateOf(host, bin string) *agentState {
	agentStatesMu.Lock()
	defer agentStatesMu.Unlock()
	k := host + "\x00" + bin
	st := agentStates[k]
	if st == nil {
		st = &agentState{}
		agentStates[k] = st
	}
	return st
}

func (st *agentState) generation() uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.gen
}

// restage stages the agent after a call seen at generation gen found it
// missing, unless another call has restaged it since.
func (d *Driver) restage(ctx context.Context, c *remote.Client, bin string, st *agentState, gen uint64) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gen != gen {
		return nil
	}
	if err := d.stageAgent(ctx, c, bin); err != nil {
		return err
	}
	st.gen++
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

// agentBin is where the agent lives on the host: content-addressed under
// <remote_root>/bin.
func (d *Driver) agentBin() (string, error) {
	sum, err := agentSum(d.AgentPath)
	if err != nil {
		return "", err
	}
	return path.Join(d.Root, agentRel(sum)), nil
}

// agentRel is the agent's path under remote_root for the binary whose hash is
// sum: content-addressed, so each build has its own.
func agentRel(sum string) string {
	return path.Join("bin", sum[:16], "terraform-provider-aml")
}

// stageAgent uploads the agent binary to bin unless it is there already.
func (d *Driver) stageAgent(ctx context.Context, c *remote.Client, bin string) error {
	if err := c.Run(ctx, "test -x "+remote.ShellQuote(bin), nil, io.Discard, io.Discard); err == nil {
		return nil
	}
	if _, err := c.Output(ctx, "mkdir -p "+remote.ShellQuote(path.Dir(bin))); err != nil {
		return fmt.Errorf("creating %s on %s: %w", path.Dir(bin), d.Endpoint.Key(), err)
	}
	f, err := os.Open(d.AgentPath)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := c.Upload(ctx, bin, f, 0o755); err != nil {
		return fmt.Errorf("staging the agent on %s: %w", d.Endpoint.Key(), err)
	}
	return nil
}

// Probe connects, stages the agent and describes the host.
func (d *Driver) Probe(ctx context.Context) (drivers.Facts, error) {
	var f drivers.Facts
	err := d.call(ctx, nil, &f, "probe")
	return f, err
}

// Capabilities: one node; Docker and GPUs as the attach-time probe found them
// (the driver does not hold them: a run asks the host when it needs Docker).
func (d *Driver) Capabilities(ctx context.Context) (drivers.Capabilities, error) {
	return drivers.Capabilities{MaxNodes: 1, Docker: true, Frameworks: []string{"Python"}}, nil
}

// PrepareEnvironment checks on the host that it can provide the environment.
func (d *Driver) PrepareEnvironment(ctx context.Context, e env.Environment) (env.Launch, error) {
	var l env.Launch
	err := d.call(ctx, e, &l, "prepare-env")
	return l, err
}

// StreamsSource: Start reads the snapshot's files from the source directory
// (RunSpec.SourceDir) as it sends them, while the engine stores them locally.
func (d *Driver) StreamsSource() bool { return true }

// Start sends the blobs the host lacks, then stages and launches the run there
// (see stage).
func (d *Driver) Start(ctx context.Context, spec drivers.RunSpec) (drivers.Handle, error) {
	req, inner, err := d.stage(ctx, spec, "start")
	if err != nil {
		return nil, err
	}
	return json.Marshal(handle{Host: d.Endpoint.Key(), RunDir: req.RunDir, LocalDir: d.localDir(spec.RunID), Inner: inner})
}

// Stage sends the blobs the host lacks and stages the run directory there,
// without launching anything (a batch system launches it). It returns the
// run directory on the host.
func (d *Driver) Stage(ctx context.Context, spec drivers.RunSpec) (string, error) {
	req, _, err := d.stage(ctx, spec, "stage")
	return req.RunDir, err
}

// AgentPathOnHost is where this driver stages the agent on the host.
func (d *Driver) AgentPathOnHost() (string, error) { return d.agentBin() }

// Call runs a host command of the agent (see package hostagent) with a JSON
// input and decodes its JSON output into out (nil: ignored).
func (d *Driver) Call(ctx context.Context, in, out any, args ...string) error {
	return d.call(ctx, in, out, args...)
}

// stage sends the manifest and the blobs the host lacks and stages (cmd
// "stage") or starts (cmd "start") the run, in one SSH session (`agent push`):
// the host answers which blobs it lacks as soon as it has read the request,
// and they follow on the same stdin (read from the source directory when the
// engine gave one, else from its blob store), then a last line that lets the
// host launch: sent once spec.Ready, if any, has returned (the engine has
// stored the snapshot and recorded the run). The host writes the run
// directory's files as the blobs arrive.
func (d *Driver) stage(ctx context.Context, spec drivers.RunSpec, cmd string) (hostrun.StageRequest, json.RawMessage, error) {
	req := hostrun.NewStageRequest(spec, d.RunDir(spec.RunID))
	req.BlobsRoot, req.EnvRoot, req.EnvCacheBytes = d.blobsRoot(), d.envRoot(), d.EnvCacheBytes
	// The host keeps a spare copy of the last snapshot it staged, built after
	// the launch, and patches the next run directory from it.
	req.SpareRoot = d.sparesRoot()
	head, err := hostagent.EncodeInput(hostagent.StartRequest{Stage: &req})
	if err != nil {
		return req, nil, err
	}
	reply := &pushReply{got: make(chan []string, 1)}
	var (
		sent              int
		sendErr, readyErr error
	)
	send := streamInput(func(sctx context.Context, w io.Writer) error {
		if _, err := fmt.Fprintf(w, "%d\n", len(head)); err != nil {
			return err
		}
		if _, err := w.Write(head); err != nil {
			return err
		}
		var missing []string
		select {
		case missing = <-reply.got:
		case <-sctx.Done():
			return errStdinClosed
		case <-ctx.Done():
			return ctx.Err()
		}
		sent = len(missing)
		if spec.SourceDir != "" {
			sendErr = hostagent.SendSourceBlobs(spec.SourceDir, spec.Manifest, missing, w)
		} else {
			sendErr = hostagent.SendBlobs(d.Blobs, missing, w)
		}
		if sendErr != nil {
			return sendErr
		}
		if spec.Ready != nil {
			if sctx.Err() != nil {
				return errStdinClosed
			}
			if readyErr = spec.Ready(ctx); readyErr != nil {
				return readyErr
			}
		}
		// The host stages and launches once it reads this line (and,
		// without it, removes what it has staged).
		_, err := io.WriteString(w, hostagent.PushGo+"\n")
		return err
	})
	err = d.call(ctx, send, reply, "push", cmd, d.blobsRoot(), d.manifestFile(spec.RunID))
	switch {
	case readyErr != nil:
		return req, nil, readyErr
	case errors.Is(sendErr, snapshot.ErrSourceChanged):
		return req, nil, fmt.Errorf("sending the snapshot to %s: %w", d.Endpoint.Key(), sendErr)
	}
	var ee *remote.ExitError
	if errors.As(err, &ee) && ee.Status == hostagent.ExitFieldError {
		var fe field.Error
		if jerr := json.Unmarshal(reply.rest.Bytes(), &fe); jerr == nil && fe.Attr != "" {
			return req, nil, &fe
		}
	}
	if err != nil {
		if sent > 0 {
			err = fmt.Errorf("uploading %d file(s) of the snapshot and staging the run: %w", sent, err)
		}
		return req, nil, err
	}
	if !reply.replied {
		return req, nil, fmt.Errorf("on %s: agent push answered nothing", d.Endpoint.Key())
	}
	first, second, _ := bytes.Cut(bytes.TrimSpace(reply.rest.Bytes()), []byte("\n"))
	inner := json.RawMessage(first)
	if !json.Valid(inner) {
		return req, nil, fmt.Errorf("on %s: agent push answered %q", d.Endpoint.Key(), truncate(reply.rest.String(), 200))
	}
	var st drivers.State
	if len(second) > 0 && json.Unmarshal(second, &st) == nil && st.Status != "" {
		// The run's state right after the launch: the first Status asks
		// no session of its own.
		launchStates.Store(req.RunDir, launchState{st: st, at: time.Now()})
	}
	req.Manifest = spec.Manifest
	return req, inner, nil
}

// launchState is a run's state as the host saw it when it launched it,
// answered by the first Status of that run (once, and only while fresh).
type launchState struct {
	st drivers.State
	at time.Time
}

// launchStates holds the launchState of runs this process launched, by run
// directory on the host; launchStateFresh is how long one answers a Status.
var launchStates sync.Map

const launchStateFresh = 2 * time.Second

// pushReply reads `agent push`'s stdout: its first line (the blobs the host
// lacks) goes to got, once; the rest is kept.
type pushReply struct {
	got     chan []string
	line    []byte
	replied bool
	rest    bytes.Buffer
}

func (r *pushReply) Write(p []byte) (int, error) {
	if r.replied {
		return r.rest.Write(p)
	}
	n := len(p)
	i := bytes.IndexByte(p, '\n')
	if i < 0 {
		r.line = append(r.line, p...)
		return n, nil
	}
	r.line = append(r.line, p[:i]...)
	r.replied = true
	var pr hostagent.PushReply
	if err := json.Unmarshal(r.line, &pr); err != nil {
		// Not a reply (a field error, say): keep it all for the caller.
		r.rest.Write(r.line)
		r.rest.WriteByte('\n')
		r.rest.Write(p[i+1:])
		close(r.got)
		return n, nil
	}
	r.got <- pr.Missing
	r.rest.Write(p[i+1:])
	return n, nil
}

// Recover re-attaches to a run from its handle (no connection is made yet).
func (d *Driver) Recover(ctx context.Context, raw drivers.Handle) (drivers.Execution, error) {
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
	// collected is what the Wait that saw the run end brought back with it
	// (its outputs and logs are in LocalDir already), for the next Collect.
	collected *drivers.Collected
}

func (e *execution) Status(ctx context.Context) (drivers.State, error) {
	if v, ok := launchStates.LoadAndDelete(e.h.RunDir); ok {
		if ls := v.(launchState); time.Since(ls.at) < launchStateFresh {
			return ls.st, nil
		}
	}
	var st drivers.State
	err := e.d.call(ctx, []byte(e.h.Inner), &st, "status")
	return st, err
}

// waitBound is how long one `agent wait` blocks on the host before it answers
// with the run still going (and is asked again).
const waitBound = 20 * time.Second

// Wait asks the host to answer when the run has ended (`agent wait`, which
// learns it from the supervisor's status file as it is written), in calls of
// at most waitBound, so it learns of the end at once instead of polling. A
// lost connection does not end the wait: the run goes on on the host, and the
// pool redials, with backoff, until ctx ends.
func (e *execution) Wait(ctx context.Context) (drivers.State, error) {
	const first, most = 100 * time.Millisecond, time.Second
	delay := first
	var last drivers.State
	bound := strconv.FormatFloat(waitBound.Seconds(), 'f', -1, 64)
	for {
		st, err := e.waitOnce(ctx, bound)
		switch {
		case ctx.Err() != nil:
			return last, ctx.Err()
		case err == nil:
			last = st
			if st.Status.Terminal() {
				return st, nil
			}
			delay = first
			continue
		case !drivers.IsUnreachable(err):
			return last, err
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*3/2, most)
	}
}

// waitOnce is one `agent wait`, which, when the run has ended, also brings
// back what Collect would (collect-pack's answer after the state, in the same
// session): kept for the next Collect, which then asks the host nothing. A
// collection that fails here is left to Collect.
func (e *execution) waitOnce(ctx context.Context, bound string) (drivers.State, error) {
	var st drivers.State
	state := &firstLine{}
	c, cerr := e.collectVia(ctx, func(ctx context.Context, out io.Writer) error {
		state.rest = out
		return e.d.call(ctx, []byte(e.h.Inner), state, "wait", bound, e.h.RunDir, e.d.blobsRoot())
	})
	if !state.done {
		if cerr == nil {
			cerr = fmt.Errorf("on %s: agent wait answered nothing", e.d.Endpoint.Key())
		}
		return st, cerr
	}
	if err := json.Unmarshal(state.line, &st); err != nil {
		return st, fmt.Errorf("on %s: agent wait answered %q: %w", e.d.Endpoint.Key(), truncate(string(state.line), 200), err)
	}
	if st.Status.Terminal() && cerr == nil {
		e.collected = &c
	}
	return st, nil
}

func (e *execution) Logs(ctx context.Context, offset int64) ([]byte, int64, error) {
	var buf bytes.Buffer
	err := e.d.call(ctx, []byte(e.h.Inner), &buf, "logs", strconv.FormatInt(offset, 10))
	return buf.Bytes(), offset + int64(buf.Len()), err
}

func (e *execution) Cancel(ctx context.Context, grace time.Duration, reason string) error {
	return e.d.call(ctx, []byte(e.h.Inner), nil, "cancel", strconv.FormatFloat(grace.Seconds(), 'f', -1, 64), reason)
}

// DefaultCollectMaxBytes bounds what a host may send back as outputs and logs.
const DefaultCollectMaxBytes = 2 << 30

// Collect reads metrics on the host and brings logs/ and outputs/ back into
// the run's local directory, checking every path, in one session (`agent
// collect-pack`: the metrics on one line, then the archive). A collection
// limit ends the transfer (both ends: the remote command is stopped), keeps
// what came and says in Warnings what was left on the host and where. The
// output listing is what is on the engine host afterwards.
func (e *execution) Collect(ctx context.Context) (drivers.Collected, error) {
	if c := e.collected; c != nil {
		e.collected = nil
		return *c, nil
	}
	return e.collectVia(ctx, func(ctx context.Context, out io.Writer) error {
		return e.d.call(ctx, []byte(e.h.Inner), out, "collect-pack", e.h.RunDir)
	})
}

// collectVia runs a host command (call) whose output is collect-pack's and
// brings the run's results back from it.
func (e *execution) collectVia(ctx context.Context, call func(ctx context.Context, out io.Writer) error) (drivers.Collected, error) {
	var c drivers.Collected
	if err := os.MkdirAll(e.h.LocalDir, 0o755); err != nil {
		return c, err
	}
	limit := e.d.CollectMaxBytes
	if limit <= 0 {
		limit = DefaultCollectMaxBytes
	}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := hostagent.Unpack(pr, e.h.LocalDir, limit)
		if err != nil {
			stop() // the remote pack must not write into a pipe nobody reads
			pr.CloseWithError(err)
		} else {
			_, _ = io.Copy(io.Discard, pr) // whatever follows the archive's end
		}
		done <- err
	}()
	head := &firstLine{rest: pw}
	err := call(pctx, head)
	pw.CloseWithError(err)
	uerr := <-done
	if !head.done {
		if err == nil {
			err = fmt.Errorf("on %s: agent collect-pack answered nothing", e.d.Endpoint.Key())
		}
		return c, err
	}
	if jerr := json.Unmarshal(head.line, &c); jerr != nil {
		return c, fmt.Errorf("on %s: agent collect-pack answered %q: %w", e.d.Endpoint.Key(), truncate(string(head.line), 200), jerr)
	}
	var le *hostagent.LimitError
	switch {
	case errors.As(uerr, &le):
		c.Warnings = append(c.Warnings, fmt.Sprintf("%v: what fits was brought back to %s; the rest is on %s in %s", le, e.h.LocalDir, e.d.Endpoint.Key(), e.h.RunDir))
	case uerr != nil:
		return c, fmt.Errorf("bringing back outputs of %s: %w", e.h.RunDir, uerr)
	case err != nil:
		return c, fmt.Errorf("bringing back outputs of %s: %w", e.h.RunDir, err)
	}
	l := supervise.Layout{Dir: e.h.LocalDir}
	c.OutputsPath, c.LogPath = l.Outputs(), l.StdLog()
	if c.OutputFiles, err = hostrun.ListFiles(l.Outputs()); err != nil {
		return c, err
	}
	return c, nil
}

// firstLine keeps what is written up to the first newline and passes the rest
// on (collect-pack: the metrics, then the archive).
type firstLine struct {
	line []byte
	done bool
	rest io.Writer
}

// firstLineMax bounds the line (a run's metrics).
const firstLineMax = 256 << 20

func (f *firstLine) Write(p []byte) (int, error) {
	n := len(p)
	if !f.done {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(f.line)+len(p) > firstLineMax {
				return 0, errors.New("collect-pack: the metrics line is too long")
			}
			f.line = append(f.line, p...)
			return n, nil
		}
		f.line, f.done, p = append(f.line, p[:i]...), true, p[i+1:]
	}
	if len(p) > 0 {
		if _, err := f.rest.Write(p); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// HandleFor is the handle of a run directory on the host that this driver did
// not launch itself (a batch system did): its Logs and Collect work; its
// Status is the batch system's business.
func HandleFor(d *Driver, runID, runDir string) drivers.Handle {
	inner, _ := json.Marshal(map[string]string{"run_dir": runDir})
	h, _ := json.Marshal(handle{Host: d.Endpoint.Key(), RunDir: runDir, LocalDir: d.localDir(runID), Inner: inner})
	return h
}
