package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// maxDialAttempts bounds the retries of one Get; backoff doubles from
// firstBackoff between attempts.
const (
	maxDialAttempts = 4
	firstBackoff    = 250 * time.Millisecond
)

// Pool shares one multiplexed SSH connection per Endpoint.Key among every
// caller in the process. It is safe for concurrent use. A connection that dies
// is dropped and the next Get dials again.
type Pool struct {
	mu      sync.Mutex
	entries map[string]*poolEntry
	closed  bool
	wg      sync.WaitGroup // the clients' watcher goroutines
}

// poolEntry is a connection being dialed (ready open) or dialed (ready closed).
type poolEntry struct {
	ready  chan struct{}
	client *Client
	err    error
}

// NewPool returns an empty pool.
func NewPool() *Pool {
	return &Pool{entries: map[string]*poolEntry{}}
}

var (
	errPoolClosed = errors.New("ssh connection pool is closed")
	// errNoRetry marks an unreachable error that was already retried below.
	errNoRetry = errors.New("already retried")
)

// Get returns the shared client for ep, dialing it if there is none or the last
// one died. Dialing retries with backoff up to 4 attempts within ctx; an
// authentication failure or a host key mismatch is returned at once.
func (p *Pool) Get(ctx context.Context, ep Endpoint) (*Client, error) {
	ep = ep.withDefaults()
	if err := ep.validate(); err != nil {
		return nil, err
	}
	key := ep.Key()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errPoolClosed
		}
		e, ok := p.entries[key]
		if !ok {
			e = &poolEntry{ready: make(chan struct{})}
			p.entries[key] = e
			p.mu.Unlock()
			c, err := p.dial(ctx, ep)
			p.mu.Lock()
			if err == nil && p.closed {
				c.closeWith(errPoolClosed)
				c, err = nil, errPoolClosed
			}
			e.client, e.err = c, err
			if err != nil {
				delete(p.entries, key)
			}
			close(e.ready)
			if c != nil {
				p.watch(key, e, c)
			}
			p.mu.Unlock()
			if err != nil {
				return nil, err
			}
			return c, nil
		}
		p.mu.Unlock()

		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the ssh connection to %s: %w", ep.name(), ctx.Err())
		}
		if e.err != nil {
			// Another caller's dial gave up because its own context ended; ours
			// may still have time, so dial ourselves.
			if isContextError(e.err) && ctx.Err() == nil {
				continue
			}
			return nil, e.err
		}
		c := e.client
		if c.isClosed() {
			p.forget(key, e)
			continue
		}
		if err := c.checkPin(ep); err != nil {
			return nil, err
		}
		return c, nil
	}
}

// Close closes every connection and waits for their goroutines to stop.
// Clients obtained earlier fail with ErrConnectionLost afterwards.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	var clients []*Client
	for _, e := range p.entries {
		select {
		case <-e.ready:
			if e.client != nil {
				clients = append(clients, e.client)
			}
		default: // still dialing: Get closes it when the dial ends
		}
	}
	p.entries = map[string]*poolEntry{}
	p.mu.Unlock()
	for _, c := range clients {
		c.closeWith(errPoolClosed)
	}
	p.wg.Wait()
}

func (p *Pool) forget(key string, e *poolEntry) {
	p.mu.Lock()
	if p.entries[key] == e {
		delete(p.entries, key)
	}
	p.mu.Unlock()
}

// watch starts the client's goroutines; they end when the connection does.
// Called with p.mu held.
func (p *Pool) watch(key string, e *poolEntry, c *Client) {
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		err := c.conn.Wait()
		c.markClosed(err)
		p.forget(key, e)
	}()
	go func() {
		defer p.wg.Done()
		c.keepAlive()
	}()
}

func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// dial connects with retry and backoff.
func (p *Pool) dial(ctx context.Context, ep Endpoint) (*Client, error) {
	auth, err := ep.authMethods()
	if err != nil {
		return nil, err
	}
	defer auth.cleanup()

	backoff := firstBackoff
	var last error
	attempts := 0
	for attempts < maxDialAttempts {
		if ctx.Err() != nil {
			break
		}
		attempts++
		c, err := p.dialOnce(ctx, ep, auth)
		if err == nil {
			return c, nil
		}
		last = err
		if errors.Is(err, ErrAuth) || errors.Is(err, ErrHostKeyMismatch) || errors.Is(err, errPoolClosed) ||
			errors.Is(err, errNoRetry) || !errors.Is(err, ErrUnreachable) {
			return nil, err
		}
		if attempts == maxDialAttempts {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		backoff *= 2
	}
	if last == nil { // ctx was done before the first attempt
		return nil, newKindError(ErrUnreachable, fmt.Sprintf("cannot reach %s: %v", ep.name(), ctx.Err()), ctx.Err())
	}
	msg := last.Error()
	if attempts > 1 {
		msg += fmt.Sprintf(" (after %d attempts)", attempts)
	}
	if ctx.Err() != nil {
		return nil, newKindError(ErrUnreachable, msg+" (gave up: "+ctx.Err().Error()+")", last, ctx.Err())
	}
	return nil, newKindError(ErrUnreachable, msg, last)
}

// dialOnce makes one TCP connection (directly or through the bastion) and one
// SSH handshake, bounded by ep.DialTimeout and ctx.
func (p *Pool) dialOnce(ctx context.Context, ep Endpoint, auth *authSetup) (*Client, error) {
	actx, cancel := context.WithTimeout(ctx, ep.DialTimeout)
	defer cancel()

	via := ""
	var conn net.Conn
	var err error
	if ep.Bastion != nil {
		bastion, berr := p.Get(actx, *ep.Bastion)
		if berr != nil {
			if errors.Is(berr, ErrAuth) || errors.Is(berr, ErrHostKeyMismatch) {
				return nil, fmt.Errorf("bastion for %s: %w", ep.name(), berr)
			}
			// The bastion's own Get already retried; retrying here would multiply.
			return nil, newKindError(ErrUnreachable, fmt.Sprintf("cannot reach %s: bastion: %v", ep.name(), berr), berr, errNoRetry)
		}
		via = " via " + bastion.name
		conn, err = bastion.conn.DialContext(actx, "tcp", ep.addr())
	} else {
		var d net.Dialer
		conn, err = d.DialContext(actx, "tcp", ep.addr())
	}
	if err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) && oce.Reason == ssh.Prohibited {
			// The bastion's policy forbids this target; asking again won't help.
			return nil, newKindError(ErrUnreachable, fmt.Sprintf("cannot reach %s%s: the bastion refuses to forward there: %v", ep.name(), via, err), err, errNoRetry)
		}
		return nil, newKindError(ErrUnreachable, fmt.Sprintf("cannot reach %s%s: %v", ep.name(), via, describeDialError(err, ep)), err)
	}

	// A server that accepts TCP but never finishes the handshake must not hang
	// us: closing the conn aborts NewClientConn. SetDeadline would not work on
	// a tunnelled conn.
	stop := context.AfterFunc(actx, func() { _ = conn.Close() })
	hk, err := newHostKeyCheck(ep)
	if err != nil {
		stop()
		_ = conn.Close()
		return nil, err
	}
	auth.resetTried()
	cfg := &ssh.ClientConfig{
		User:              ep.User,
		Auth:              auth.methods,
		HostKeyCallback:   hk.callback,
		HostKeyAlgorithms: hk.algorithms(),
		Timeout:           ep.DialTimeout,
	}
	sconn, chans, reqs, err := ssh.NewClientConn(conn, ep.addr(), cfg)
	if !stop() {
		// The timer fired (or ctx ended) and closed conn; whatever the handshake
		// returned, the connection is unusable.
		if err == nil {
			_ = sconn.Close()
		}
		cause := actx.Err()
		if ctx.Err() == nil {
			cause = fmt.Errorf("ssh handshake did not finish within %s", ep.DialTimeout)
		}
		return nil, newKindError(ErrUnreachable, fmt.Sprintf("cannot reach %s%s: %v", ep.name(), via, cause), cause)
	}
	if err != nil {
		return nil, classifyHandshakeError(ep, via, hk, auth, err)
	}
	c := newClient(ep, ssh.NewClient(sconn, chans, reqs), hk.seen)
	return c, nil
}

func describeDialError(err error, ep Endpoint) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Sprintf("no answer within %s (%v)", ep.DialTimeout, err)
	}
	return err.Error()
}

func classifyHandshakeError(ep Endpoint, via string, hk *hostKeyCheck, auth *authSetup, err error) error {
	if hk.mismatch != nil || errors.Is(err, ErrHostKeyMismatch) {
		return hk.mismatch
	}
	msg := err.Error()
	lower := strings.ToLower(msg)
	if hk.pinned != nil && hk.seen == nil && strings.Contains(lower, "no common algorithm for host key") {
		return newKindError(ErrHostKeyMismatch, fmt.Sprintf(
			"host key for %s changed: expected %s (%s), but the server offers no %s key; if the host was re-keyed, update host_key",
			ep.addr(), ssh.FingerprintSHA256(hk.pinned), hk.pinned.Type(), hk.pinned.Type()))
	}
	// Past the host key check, a failure that talks about authentication is the
	// server refusing our credentials (including "too many authentication failures").
	if hk.seen != nil && strings.Contains(lower, "authenticat") {
		if tried := auth.triedMethods(); len(tried) > 0 {
			return newKindError(ErrAuth, fmt.Sprintf("authentication failed for %s (tried: %s)",
				ep.name(), strings.Join(tried, ", ")))
		}
		return newKindError(ErrAuth, fmt.Sprintf("authentication failed for %s: the server accepts none of the configured methods (%s)",
			ep.name(), strings.Join(auth.names, ", ")))
	}
	return newKindError(ErrUnreachable, fmt.Sprintf("cannot reach %s%s: %v", ep.name(), via, err), err)
}
