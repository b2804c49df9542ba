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
	idleMu                  sync.Mutex
	idle                    = sync.NewCond(&idleMu)
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
	flag.Parse()
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

	b, _ := json.Marshal(map[string]any{"port": ln.Addr().(*net.TCPAddr).Port, "control": ctl.Addr().String()})
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
	pipe := func(dst, src net.Conn, n *atomic.Int64) {
		_, err := io.Copy(counter{dst, n}, src)
		if err != nil {
			// A broken direction ends the connection.
			_ = client.Close()
			_ = server.Close()
		} else if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite() // pass the EOF on
		}
		done <- struct{}{}
	}
	go pipe(server, client, &up)
	go pipe(client, server, &down)
	<-done
	<-done
}
