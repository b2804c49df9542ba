// Package remote is the SSH transport shared by every SSH-based target driver:
// one multiplexed connection per endpoint per process, verified host keys,
// bastions, keepalives, retry with backoff and no PTY.
package remote

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Defaults applied to zero Endpoint fields.
const (
	DefaultPort              = 22
	DefaultDialTimeout       = 15 * time.Second
	DefaultKeepAliveInterval = 15 * time.Second
	// DefaultMaxSessions is OpenSSH's default MaxSessions: more concurrent
	// sessions on one connection are refused by a stock sshd.
	DefaultMaxSessions = 10
	// keepAliveMisses unanswered keepalives close a link.
	keepAliveMisses = 3
)

// Auth holds credentials. Every method given is offered, public keys first
// (agent, then PrivateKey), then the password. Values never appear in errors.
type Auth struct {
	Password   string
	PrivateKey []byte // PEM or OpenSSH format
	Passphrase []byte // for an encrypted PrivateKey
	UseAgent   bool   // keys from the agent at $SSH_AUTH_SOCK
}

// Endpoint says how to reach and authenticate to one SSH server.
type Endpoint struct {
	Address string
	Port    int // default 22
	User    string
	Auth    Auth
	// HostKey is the pinned server key in authorized_keys form
	// ("ssh-ed25519 AAAA..."); empty means trust on first use: the key seen is
	// accepted and reported by Client.HostKey for the caller to pin.
	HostKey string
	// InsecureIgnoreHostKey skips verification; the only way around it.
	InsecureIgnoreHostKey bool
	// Bastion, when set, is dialed first and the connection to this endpoint is
	// tunnelled through it.
	Bastion *Endpoint
	// DialTimeout bounds one attempt: TCP connect plus SSH handshake. Default 15s.
	DialTimeout time.Duration
	// KeepAliveInterval between keepalive requests; a link that misses three in a
	// row is closed. Default 15s.
	KeepAliveInterval time.Duration
	// MaxSessions bounds concurrent sessions on the shared connection; further
	// Run calls wait for a free slot. Default 10, OpenSSH's default.
	MaxSessions int
}

func (e Endpoint) withDefaults() Endpoint {
	if e.Port == 0 {
		e.Port = DefaultPort
	}
	if e.DialTimeout <= 0 {
		e.DialTimeout = DefaultDialTimeout
	}
	if e.KeepAliveInterval <= 0 {
		e.KeepAliveInterval = DefaultKeepAliveInterval
	}
	if e.MaxSessions <= 0 {
		e.MaxSessions = DefaultMaxSessions
	}
	return e
}

// addr is host:port for dialing.
func (e Endpoint) addr() string {
	port := e.Port
	if port == 0 {
		port = DefaultPort
	}
	return net.JoinHostPort(e.Address, strconv.Itoa(port))
}

// name is user@host:port, the form every error uses.
func (e Endpoint) name() string { return e.User + "@" + e.addr() }

// Key identifies the connection an endpoint shares: user@host:port, followed by
// " via " and the bastion's key when there is one. Credentials and host key
// settings are not part of it.
func (e Endpoint) Key() string {
	if e.Bastion != nil {
		return e.name() + " via " + e.Bastion.Key()
	}
	return e.name()
}

func (e Endpoint) validate() error {
	if strings.TrimSpace(e.Address) == "" {
		return errors.New("ssh endpoint: address is empty")
	}
	if e.User == "" {
		return fmt.Errorf("ssh endpoint %s: username is empty", e.addr())
	}
	if e.Port < 0 || e.Port > 65535 {
		return fmt.Errorf("ssh endpoint %s: port %d is out of range", e.Address, e.Port)
	}
	if e.HostKey != "" {
		if _, err := parseHostKey(e.HostKey); err != nil {
			return fmt.Errorf("ssh endpoint %s: host_key: %w", e.name(), err)
		}
	}
	for b, depth := e.Bastion, 0; b != nil; b, depth = b.Bastion, depth+1 {
		if depth > 8 {
			return fmt.Errorf("ssh endpoint %s: bastion chain too long", e.name())
		}
	}
	if e.Bastion != nil {
		if err := e.Bastion.validate(); err != nil {
			return fmt.Errorf("bastion: %w", err)
		}
	}
	return nil
}

func parseHostKey(s string) (ssh.PublicKey, error) {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(strings.TrimSpace(s)))
	if err != nil {
		return nil, fmt.Errorf("not a public key in authorized_keys form (\"ssh-ed25519 AAAA...\"): %w", err)
	}
	return k, nil
}

// authorizedKey renders k as one authorized_keys line without the newline.
func authorizedKey(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// authSetup is the per-dial result of turning Auth into ssh methods.
type authSetup struct {
	methods []ssh.AuthMethod
	names   []string // in the order offered, for error messages
	cleanup func()

	mu    sync.Mutex
	tried []string // methods the server let us try in the last handshake
}

func (s *authSetup) record(method string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.tried {
		if m == method {
			return
		}
	}
	s.tried = append(s.tried, method)
}

func (s *authSetup) resetTried() {
	s.mu.Lock()
	s.tried = nil
	s.mu.Unlock()
}

func (s *authSetup) triedMethods() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tried...)
}

// authMethods parses credentials before any network traffic, so key problems
// are reported as such and never retried.
func (e Endpoint) authMethods() (*authSetup, error) {
	s := &authSetup{cleanup: func() {}}
	var signers []ssh.Signer
	if e.Auth.UseAgent {
		sock := os.Getenv("SSH_AUTH_SOCK")
		if sock == "" {
			return nil, newKindError(ErrAuth, fmt.Sprintf("use_agent is set for %s but SSH_AUTH_SOCK is not", e.name()))
		}
		conn, err := net.DialTimeout("unix", sock, 5*time.Second)
		if err != nil {
			return nil, newKindError(ErrAuth, fmt.Sprintf("use_agent is set for %s but the agent cannot be reached: %v", e.name(), err), err)
		}
		s.cleanup = func() { _ = conn.Close() }
		agentSigners, err := agent.NewClient(conn).Signers()
		if err != nil {
			s.cleanup()
			return nil, newKindError(ErrAuth, fmt.Sprintf("reading keys from the ssh agent for %s: %v", e.name(), err), err)
		}
		signers = append(signers, agentSigners...)
	}
	if len(e.Auth.PrivateKey) > 0 {
		signer, err := parsePrivateKey(e.Auth.PrivateKey, e.Auth.Passphrase)
		if err != nil {
			s.cleanup()
			return nil, err
		}
		signers = append(signers, signer)
	}
	// The callbacks run only when the server lets a method be tried, which is
	// what an authentication error reports.
	if e.Auth.UseAgent || len(signers) > 0 {
		s.methods = append(s.methods, ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
			s.record("publickey")
			return signers, nil
		}))
		s.names = append(s.names, "publickey")
	}
	if e.Auth.Password != "" {
		pw := e.Auth.Password
		answer := passwordChallenge(pw)
		s.methods = append(s.methods,
			ssh.PasswordCallback(func() (string, error) {
				s.record("password")
				return pw, nil
			}),
			ssh.KeyboardInteractive(func(name, instruction string, questions []string, echos []bool) ([]string, error) {
				s.record("keyboard-interactive")
				return answer(name, instruction, questions, echos)
			}))
		s.names = append(s.names, "password", "keyboard-interactive")
	}
	if len(s.methods) == 0 {
		s.cleanup()
		return nil, newKindError(ErrAuth, fmt.Sprintf("no credentials for %s: set password, private_key or use_agent", e.name()))
	}
	return s, nil
}

// passwordChallenge answers a keyboard-interactive round that asks one hidden
// question (a PAM password prompt) with the password; other rounds get no
// answers, which fails them rather than guessing.
func passwordChallenge(pw string) ssh.KeyboardInteractiveChallenge {
	return func(_, _ string, questions []string, echos []bool) ([]string, error) {
		if len(questions) == 0 {
			return nil, nil
		}
		if len(questions) == 1 && !echos[0] {
			return []string{pw}, nil
		}
		return nil, errors.New("keyboard-interactive: unsupported prompt")
	}
}

func parsePrivateKey(pem, passphrase []byte) (ssh.Signer, error) {
	signer, err := ssh.ParsePrivateKey(pem)
	if err == nil {
		return signer, nil
	}
	var missing *ssh.PassphraseMissingError
	if !errors.As(err, &missing) {
		return nil, newKindError(ErrAuth, "private_key is not a usable private key: "+sanitizeKeyError(err), ErrPrivateKey)
	}
	if len(passphrase) == 0 {
		return nil, newKindError(ErrAuth, "private_key is encrypted: set private_key_passphrase", ErrPassphrase)
	}
	signer, err = ssh.ParsePrivateKeyWithPassphrase(pem, passphrase)
	if err != nil {
		if errors.Is(err, x509.IncorrectPasswordError) || strings.Contains(err.Error(), "decryption") {
			return nil, newKindError(ErrAuth, "private_key_passphrase does not decrypt private_key (wrong passphrase)", ErrPassphrase)
		}
		return nil, newKindError(ErrAuth, "private_key cannot be decrypted: "+sanitizeKeyError(err), ErrPassphrase)
	}
	return signer, nil
}

// sanitizeKeyError keeps the library's message but never key material: the
// messages x/crypto produces are fixed strings, and anything longer is cut.
func sanitizeKeyError(err error) string {
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120] + "..."
	}
	return msg
}

// hostKeyCheck verifies the server key and records what was seen.
type hostKeyCheck struct {
	ep       Endpoint
	pinned   ssh.PublicKey
	seen     ssh.PublicKey
	mismatch error
}

func newHostKeyCheck(ep Endpoint) (*hostKeyCheck, error) {
	h := &hostKeyCheck{ep: ep}
	if ep.HostKey != "" && !ep.InsecureIgnoreHostKey {
		k, err := parseHostKey(ep.HostKey)
		if err != nil {
			return nil, err
		}
		h.pinned = k
	}
	return h, nil
}

func (h *hostKeyCheck) callback(_ string, _ net.Addr, key ssh.PublicKey) error {
	h.seen = key
	if h.pinned == nil || bytes.Equal(h.pinned.Marshal(), key.Marshal()) {
		return nil
	}
	h.mismatch = mismatchError(h.ep, h.pinned, key)
	return h.mismatch
}

func mismatchError(ep Endpoint, pinned, got ssh.PublicKey) error {
	exp, saw := ssh.FingerprintSHA256(pinned), ssh.FingerprintSHA256(got)
	if pinned.Type() != got.Type() {
		exp += " (" + pinned.Type() + ")"
		saw += " (" + got.Type() + ")"
	}
	return newKindError(ErrHostKeyMismatch, fmt.Sprintf(
		"host key for %s changed: expected %s, got %s; if the host was re-keyed, update host_key",
		ep.addr(), exp, saw))
}

// algorithms makes the server present the pinned key's type, so a host with
// several host keys is not reported as changed just because it preferred another.
func (h *hostKeyCheck) algorithms() []string {
	if h.pinned == nil {
		return nil
	}
	switch t := h.pinned.Type(); t {
	case ssh.KeyAlgoRSA:
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	default:
		return []string{t}
	}
}
