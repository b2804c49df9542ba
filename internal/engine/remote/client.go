package remote

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Client is one shared SSH connection, obtained from Pool.Get. It is safe for
// concurrent use; every Run opens its own session on the connection.
type Client struct {
	name      string // user@host:port[ via bastion]
	conn      *ssh.Client
	hostKey   ssh.PublicKey
	keepEvery time.Duration
	sessions  chan struct{} // semaphore: MaxSessions slots

	done      chan struct{} // closed once the connection has ended
	closeOnce sync.Once
	mu        sync.Mutex
	closeErr  error // why it ended
}

func newClient(ep Endpoint, conn *ssh.Client, hostKey ssh.PublicKey) *Client {
	name := ep.name()
	if ep.Bastion != nil {
		name += " via " + ep.Bastion.name()
	}
	return &Client{
		name:      name,
		conn:      conn,
		hostKey:   hostKey,
		keepEvery: ep.KeepAliveInterval,
		sessions:  make(chan struct{}, ep.MaxSessions),
		done:      make(chan struct{}),
	}
}

// HostKey is the server's key in authorized_keys form ("ssh-ed25519 AAAA..."),
// the value trust-on-first-use pins.
func (c *Client) HostKey() string { return authorizedKey(c.hostKey) }

// Fingerprint is the server key's fingerprint as `ssh-keygen -lf` prints it
// ("SHA256:...").
func (c *Client) Fingerprint() string { return ssh.FingerprintSHA256(c.hostKey) }

// Done is closed when the connection has ended (closed, lost, or keepalives
// unanswered); Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is nil while the connection is up, else the reason it ended.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// Close ends the connection for every user of this shared client; the pool
// dials a new one on the next Get.
func (c *Client) Close() error {
	c.closeWith(errors.New("closed"))
	return nil
}

func (c *Client) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// closeWith records why and closes the connection; the watcher goroutine then
// marks it done.
func (c *Client) closeWith(reason error) {
	c.setReason(reason)
	_ = c.conn.Close()
}

func (c *Client) setReason(reason error) {
	c.mu.Lock()
	if c.closeErr == nil {
		c.closeErr = newKindError(ErrConnectionLost,
			fmt.Sprintf("ssh connection to %s lost: %v", c.name, reason), reason)
	}
	c.mu.Unlock()
}

// markClosed is called by the watcher once conn.Wait returns.
func (c *Client) markClosed(waitErr error) {
	reason := waitErr
	if reason == nil {
		reason = io.EOF
	}
	c.setReason(reason)
	c.closeOnce.Do(func() { close(c.done) })
}

// lostError is the error for work that failed because the connection ended.
func (c *Client) lostError() error {
	if err := c.Err(); err != nil {
		return err
	}
	return newKindError(ErrConnectionLost, "ssh connection to "+c.name+" lost")
}

func (c *Client) checkPin(ep Endpoint) error {
	if ep.HostKey == "" || ep.InsecureIgnoreHostKey {
		return nil
	}
	pinned, err := parseHostKey(ep.HostKey)
	if err != nil {
		return err
	}
	if !bytes.Equal(pinned.Marshal(), c.hostKey.Marshal()) {
		return mismatchError(ep, pinned, c.hostKey)
	}
	return nil
}

// keepAlive sends keepalive@openssh.com every interval. Any reply (OpenSSH
// answers "failure" to this request) proves the link; keepAliveMisses
// consecutive intervals without one close the connection, so Runs on a dead link
// fail instead of hanging.
func (c *Client) keepAlive() {
	ticker := time.NewTicker(c.keepEvery)
	defer ticker.Stop()
	var pending chan error // the request in flight, nil when none
	misses := 0
	for {
		select {
		case <-c.done:
			return
		case err := <-pending:
			pending = nil
			if err != nil {
				c.closeWith(fmt.Errorf("keepalive: %w", err))
				return
			}
			misses = 0
		case <-ticker.C:
			if pending != nil {
				misses++
				if misses >= keepAliveMisses {
					c.closeWith(fmt.Errorf("no answer to %d keepalives in %s", misses, time.Duration(misses)*c.keepEvery))
					return
				}
				continue
			}
			pending = make(chan error, 1)
			go func(ch chan<- error) {
				// Returns when answered or when the connection closes.
				_, _, err := c.conn.SendRequest("keepalive@openssh.com", true, nil)
				ch <- err
			}(pending)
		}
	}
}

// acquire takes a session slot, waiting while MaxSessions are in use.
func (c *Client) acquire(ctx context.Context) error {
	select {
	case c.sessions <- struct{}{}:
		return nil
	case <-c.done:
		return c.lostError()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) release() { <-c.sessions }

// newSession opens a session, retrying for a while when the server refuses it
// for lack of slots: OpenSSH frees a closed session's slot a moment after the
// close, and answers an open beyond MaxSessions with "open failed".
func (c *Client) newSession(ctx context.Context) (*ssh.Session, error) {
	delay := 20 * time.Millisecond
	for attempt := 0; ; attempt++ {
		s, err := c.conn.NewSession()
		if err == nil {
			return s, nil
		}
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || c.isClosed() {
			return nil, c.lostErrorWith(err)
		}
		if attempt >= 12 {
			return nil, fmt.Errorf("opening an ssh session on %s: %w", c.name, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-c.done:
			t.Stop()
			return nil, c.lostError()
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		delay = min(delay*2, 500*time.Millisecond)
	}
}

func (c *Client) lostErrorWith(err error) error {
	if cerr := c.Err(); cerr != nil {
		return cerr
	}
	return newKindError(ErrConnectionLost, fmt.Sprintf("ssh connection to %s lost: %v", c.name, err), err)
}

// Run runs cmd through the remote user's shell without a PTY, streaming stdin
// (nil = empty), stdout and stderr (nil = discard). stdout and stderr are
// written from different goroutines: pass distinct or synchronized writers. A non-zero exit returns
// *ExitError with the stderr tail. Cancelling ctx closes the session after a
// best-effort SIGKILL to the remote command; Run then returns ctx's error. A
// connection that ends meanwhile yields an error wrapping ErrConnectionLost.
func (c *Client) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	sess, err := c.newSession(ctx)
	if err != nil {
		return err
	}
	defer sess.Close()

	tail := &tailBuffer{max: stderrTailBytes}
	sess.Stdin = stdin
	if stdout != nil {
		sess.Stdout = stdout
	}
	if stderr != nil {
		sess.Stderr = io.MultiWriter(stderr, tail)
	} else {
		sess.Stderr = tail
	}
	if err := sess.Start(cmd); err != nil {
		if c.isClosed() {
			return c.lostError()
		}
		return fmt.Errorf("starting remote command on %s: %w", c.name, err)
	}

	waited := make(chan error, 1)
	go func() { waited <- sess.Wait() }()
	select {
	case err = <-waited:
	case <-ctx.Done():
		_ = sess.Signal(ssh.SIGKILL)
		_ = sess.Close()
		// Wait returns once the channel is torn down; on a dead link that takes
		// until keepalives close the connection, so don't wait for it forever.
		t := time.NewTimer(2 * time.Second)
		select {
		case <-waited:
		case <-t.C:
		}
		t.Stop()
		return fmt.Errorf("remote command on %s stopped: %w", c.name, ctx.Err())
	}
	return c.exitError(err, tail)
}

func (c *Client) exitError(err error, tail *tailBuffer) error {
	if err == nil {
		return nil
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		x := &ExitError{Host: c.name, Status: ee.ExitStatus(), Stderr: tail.String()}
		if sig := ee.Signal(); sig != "" {
			x.Signal, x.Status = sig, -1
		}
		return x
	}
	var missing *ssh.ExitMissingError
	if errors.As(err, &missing) || errors.Is(err, io.EOF) {
		// No exit status usually means the link went; give the watcher a moment
		// to notice before deciding.
		select {
		case <-c.done:
			return c.lostError()
		case <-time.After(200 * time.Millisecond):
		}
		if errors.As(err, &missing) {
			return &ExitError{Host: c.name, Status: -1, Stderr: tail.String()}
		}
	}
	if c.isClosed() {
		return c.lostError()
	}
	return fmt.Errorf("remote command on %s: %w", c.name, err)
}

// Output runs cmd and returns its stdout. On failure the error (an *ExitError
// for a non-zero exit) carries the stderr tail.
func (c *Client) Output(ctx context.Context, cmd string) ([]byte, error) {
	var out bytes.Buffer
	err := c.Run(ctx, cmd, nil, &out, nil)
	return out.Bytes(), err
}

// Upload streams r to remotePath and renames it into place, so readers never
// see a partial file. remotePath must be absolute; its directory must exist.
// The file gets mode's permission bits.
//
// It takes two sessions: one streams into a private temporary file beside the
// target, one checks its size and renames it. A single `cat > tmp && mv` would
// commit a truncated file when r fails midway, because the SSH channel then
// still ends with EOF.
func (c *Client) Upload(ctx context.Context, remotePath string, r io.Reader, mode os.FileMode) error {
	if !path.IsAbs(remotePath) {
		return fmt.Errorf("upload to %s: remote path %q is not absolute", c.name, remotePath)
	}
	if strings.HasSuffix(remotePath, "/") || strings.ContainsRune(remotePath, 0) || path.Clean(remotePath) == "/" {
		return fmt.Errorf("upload to %s: remote path %q does not name a file", c.name, remotePath)
	}
	where := c.name + ":" + remotePath
	tmp := remotePath + ".tmp." + randomSuffix()
	qtmp, qdst := ShellQuote(tmp), ShellQuote(remotePath)

	counted := &countingReader{r: r}
	// sh -c so neither step depends on the login shell's syntax.
	stream := "umask 077; exec cat > " + qtmp
	err := c.Run(ctx, "sh -c "+ShellQuote(stream), counted, nil, nil)
	if err == nil && counted.err != nil {
		err = counted.err
	}
	if err == nil {
		commit := fmt.Sprintf(`n=$(wc -c < %s) && [ $n -eq %d ] || { echo "size mismatch: $n bytes arrived, %d sent" >&2; exit 1; }; chmod %04o %s && mv -f %s %s`,
			qtmp, counted.n, counted.n, mode.Perm(), qtmp, qtmp, qdst)
		err = c.Run(ctx, "sh -c "+ShellQuote(commit), nil, nil, nil)
	}
	if err == nil {
		return nil
	}
	// Best effort, even when ctx has ended: don't leave the partial file.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = c.Run(cctx, "rm -f "+qtmp, nil, nil, nil)
	if counted.err != nil {
		return fmt.Errorf("upload to %s: reading the local data: %w", where, counted.err)
	}
	return fmt.Errorf("upload to %s: %w", where, err)
}

// countingReader counts bytes and remembers the source's own error, which
// x/crypto would otherwise turn into a clean EOF on the remote side.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (cr *countingReader) Read(p []byte) (int, error) {
	if cr.r == nil {
		return 0, io.EOF
	}
	n, err := cr.r.Read(p)
	cr.n += int64(n)
	if err != nil && err != io.EOF {
		cr.err = err
	}
	return n, err
}

func randomSuffix() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	return hex.EncodeToString(b)
}

// ShellQuote quotes s as one word for a POSIX shell. Words made only of
// characters no shell treats specially are returned as they are.
func ShellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-./=:,+@%", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
