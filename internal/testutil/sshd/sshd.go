// Package sshd starts a real OpenSSH sshd on 127.0.0.1 for tests, with a
// generated host key, a throwaway user that can log in with a generated key
// (and optionally a password), and helpers to stop, restart and cut its
// connections. Tests skip with the reason when sshd is missing or not running
// as root; scripts/install-sshd.sh installs it.
//
// The core (Launch, Server.Close, server.go) needs no testing.TB, so programs
// such as bench/sshbench/sshd use it too; this file wraps it for tests.
package sshd

import (
	"errors"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
)

// Start starts sshd and registers its shutdown (and the user's removal) with
// t.Cleanup. It skips the test when sshd cannot run here.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	skipIfUnavailable(t, Check())
	s, err := Launch(opts)
	skipIfUnavailable(t, err)
	if err != nil {
		t.Fatalf("sshd: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Logf("sshd: %v", err)
		}
	})
	return s
}

func skipIfUnavailable(t testing.TB, err error) {
	t.Helper()
	var u *UnavailableError
	if errors.As(err, &u) {
		t.Skip(u.Reason)
	}
}

// StartBastion starts a second sshd whose user may only forward to target: a
// jump host for bastion tests.
func StartBastion(t testing.TB, target *Server) *Server {
	t.Helper()
	return Start(t, Options{PermitOpen: []string{target.Addr}})
}

// Endpoint is how the remote package reaches this server: its user with the
// generated key (and passphrase) and the pinned host key.
func (s *Server) Endpoint() remote.Endpoint {
	return remote.Endpoint{
		Address:     "127.0.0.1",
		Port:        s.Port,
		User:        s.User,
		Auth:        remote.Auth{PrivateKey: s.KeyPEM, Passphrase: []byte(s.KeyPassphrase)},
		HostKey:     s.HostKey,
		DialTimeout: 5 * time.Second,
	}
}

// Restart starts the daemon again on the same port with the same host key.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.Relaunch(); err != nil {
		t.Fatalf("sshd restart: %v", err)
	}
}

// Fingerprint runs `ssh-keygen -lf pubKeyFile` and returns its SHA256:... field.
func Fingerprint(t testing.TB, pubKeyFile string) string {
	t.Helper()
	fp, err := fingerprint(pubKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// Keygen runs ssh-keygen with args (for tests that need extra keys).
func Keygen(t testing.TB, args ...string) string {
	t.Helper()
	out, err := keygen(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
