// Command proxy is the byte-counting TCP proxy bench/ssh.sh puts between the SSH clients
// (terraform's provisioners, the aml provider) and sshd, so both contenders' traffic is measured
// the same way: bytes on the wire, SSH framing, key exchange and encryption included.
//
//	proxy -target 127.0.0.1:PORT
//
// It listens on 127.0.0.1:<random port> and forwards every connection to -target. Once
// listening it prints one line of JSON to stdout:
//
//	{"port": <listen port>, "control": "127.0.0.1:<port>"}
//
// The control address serves GET /stats, answering
//
//	{"up": <client->server bytes>, "down": <server->client bytes>, "conns": <accepted>, "active": <open>}
//
// with running totals since start. GET /stats?settle=5s first waits (at most that long) until
// no connection is open, so the totals include everything a finished command sent. It stops on
// SIGTERM or SIGINT. Loopback only.
//
// Shaped mode models a slower link between the clients and the host:
//
//	proxy -target 127.0.0.1:PORT -rate-mbit 20 -delay 25ms
//
// Each direction is one link shared by every connection (as one network path would be): bytes
// leave at most -rate-mbit megabits per second, in the order they arrived, and each chunk is
// delivered -delay after it has left (so a round trip costs 2 × delay on top of the transfer
// time). The link's queue holds up to 1 MiB per connection and direction; beyond that the
// proxy stops reading from the sender, so TCP's own flow control takes over. Without the flags
// it forwards as fast as loopback goes.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	up, down, conns, active atomic.Int64
	// upLink and downLink are the shaped directions (nil: not shaped).
	upLink, downLink *link
	idleMu           sync.Mutex
	idle             = sync.NewCond(&idleMu)
)

type counter struct {
	w io.Writer
	n *atomic.Int64
}

func (c counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func main() {
	target := flag.String("target", "", "host:port to forward to (sshd)")
	rateMbit := flag.Float64("rate-mbit", 0, "shape each direction to this many megabits per second (0: unshaped)")
	delay := flag.Duration("delay", 0, "with -rate-mbit: one-way delay added to each direction")
	flag.Parse()
	if *rateMbit < 0 || *delay < 0 {
		fmt.Fprintln(os.Stderr, "proxy: -rate-mbit and -delay must not be negative")
		os.Exit(2)
	}
	if *rateMbit > 0 || *delay > 0 {
		bps := *rateMbit * 1e6 / 8
		upLink, downLink = &link{bytesPerSec: bps, delay: *delay}, &link{bytesPerSec: bps, delay: *delay}
	}
	if *target == "" {
		fmt.Fprintln(os.Stderr, "usage: proxy -target HOST:PORT")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		os.Exit(1)
	}
	ctl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		os.Exit(1)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		if s := r.URL.Query().Get("settle"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			waitIdle(d)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int64{
			"up": up.Load(), "down": down.Load(), "conns": conns.Load(), "active": active.Load(),
		})
	})
	go func() { _ = http.Serve(ctl, mux) }()

	b, _ := json.Marshal(map[string]any{"port": ln.Addr().(*net.TCPAddr).Port, "control": ctl.Addr().String(),
		"rate_mbit": *rateMbit, "delay_ms": delay.Milliseconds()})
	fmt.Println(string(b))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		<-sigs
		_ = ln.Close()
		_ = ctl.Close()
		os.Exit(0)
	}()

	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		conns.Add(1)
		active.Add(1)
		go serve(c, *target)
	}
}

// waitIdle blocks until no connection is open or d has passed.
func waitIdle(d time.Duration) {
	deadline := time.Now().Add(d)
	t := time.AfterFunc(d, func() { idleMu.Lock(); idle.Broadcast(); idleMu.Unlock() })
	defer t.Stop()
	idleMu.Lock()
	defer idleMu.Unlock()
	for active.Load() > 0 && time.Now().Before(deadline) {
		idle.Wait()
	}
}

func serve(client net.Conn, target string) {
	defer func() {
		active.Add(-1)
		idleMu.Lock()
		idle.Broadcast()
		idleMu.Unlock()
	}()
	defer client.Close()
	server, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxy: dial", target+":", err)
		return
	}
	defer server.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn, n *atomic.Int64, l *link) {
		var err error
		if l == nil {
			_, err = io.Copy(counter{dst, n}, src)
		} else {
			err = l.copy(counter{dst, n}, src, func() { _ = client.Close(); _ = server.Close() })
		}
		if err != nil {
			// A broken direction ends the connection.
			_ = client.Close()
			_ = server.Close()
		} else if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite() // pass the EOF on
		}
		done <- struct{}{}
	}
	go pipe(server, client, &up, upLink)
	go pipe(client, server, &down, downLink)
	<-done
	<-done
}

// link is one shaped direction: a rate limit and a delay, shared by every connection.
type link struct {
	bytesPerSec float64 // 0: no rate limit
	delay       time.Duration
	mu          sync.Mutex
	free        time.Time // when the link has sent everything queued so far
}

// chunk is data read from the sender, due at the receiver at due.
type chunk struct {
	b   []byte
	due time.Time
}

// schedule reserves the link for n bytes and returns when they arrive at the other end.
func (l *link) schedule(n int) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.free.Before(now) {
		l.free = now
	}
	if l.bytesPerSec > 0 {
		l.free = l.free.Add(time.Duration(float64(n) / l.bytesPerSec * float64(time.Second)))
	}
	return l.free.Add(l.delay)
}

// copy forwards src to dst through the link until src ends; it returns the first error. A failed
// write calls abort (which closes both connections, so the read ends too).
func (l *link) copy(dst io.Writer, src io.Reader, abort func()) error {
	const chunkSize = 16 << 10
	q := make(chan chunk, (1<<20)/chunkSize) // about 1 MiB queued per connection and direction
	werr := make(chan error, 1)
	go func() {
		var err error
		for c := range q {
			if err != nil {
				continue // drain: the reader stops at its next read
			}
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d)
			}
			if _, err = dst.Write(c.b); err != nil {
				abort()
			}
		}
		werr <- err
	}()
	var rerr error
	for {
		b := make([]byte, chunkSize)
		n, err := src.Read(b)
		if n > 0 {
			q <- chunk{b: b[:n], due: l.schedule(n)}
		}
		if err != nil {
			if err != io.EOF {
				rerr = err
			}
			break
		}
	}
	close(q)
	if err := <-werr; err != nil {
		return err
	}
	return rerr
}
