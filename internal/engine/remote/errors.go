package remote

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinels for the failures a caller reacts to differently. Returned errors wrap
// them (errors.Is) and carry a message naming user@host:port.
var (
	// ErrAuth: the credentials were refused or cannot be used (encrypted key
	// without passphrase, wrong passphrase, nothing configured). Never retried.
	ErrAuth = errors.New("ssh authentication failed")
	// ErrPassphrase (with ErrAuth): an encrypted private_key without a
	// passphrase, or a passphrase that does not decrypt it.
	ErrPassphrase = errors.New("ssh private key passphrase")
	// ErrPrivateKey (with ErrAuth): private_key is not a usable key.
	ErrPrivateKey = errors.New("ssh private key unusable")
	// ErrHostKeyMismatch: the server presented a key other than the pinned one.
	// Never retried.
	ErrHostKeyMismatch = errors.New("ssh host key mismatch")
	// ErrUnreachable: no SSH connection could be made within the attempts and time
	// allowed (refused, timed out, reset during the handshake, bastion failure).
	ErrUnreachable = errors.New("ssh host unreachable")
	// ErrConnectionLost: an established connection ended (keepalives unanswered,
	// reset, server gone) while or before a command ran. The remote command may
	// still be running; only its result could not be collected over this link.
	ErrConnectionLost = errors.New("ssh connection lost")
)

// kindError carries one sentinel and the underlying cause with its own message,
// so the text reads naturally while errors.Is sees both.
type kindError struct {
	kind  error
	msg   string
	cause []error
}

func (e *kindError) Error() string { return e.msg }

func (e *kindError) Unwrap() []error {
	return append([]error{e.kind}, e.cause...)
}

func newKindError(kind error, msg string, cause ...error) error {
	causes := make([]error, 0, len(cause))
	for _, c := range cause {
		if c != nil {
			causes = append(causes, c)
		}
	}
	return &kindError{kind: kind, msg: msg, cause: causes}
}

// ExitError reports a remote command that ended unsuccessfully.
type ExitError struct {
	// Host is user@host:port the command ran on.
	Host string
	// Status is the exit status; -1 when the command was killed by a signal or
	// ended without reporting a status.
	Status int
	// Signal is the signal name without "SIG" ("KILL", "TERM") when the command
	// was killed by one, else empty.
	Signal string
	// Stderr is the tail (last few KiB) of the command's standard error.
	Stderr string
}

func (e *ExitError) Error() string {
	var b strings.Builder
	switch {
	case e.Signal != "":
		fmt.Fprintf(&b, "remote command on %s was killed by signal %s", e.Host, e.Signal)
	case e.Status < 0:
		fmt.Fprintf(&b, "remote command on %s ended without an exit status", e.Host)
	default:
		fmt.Fprintf(&b, "remote command on %s exited with status %d", e.Host, e.Status)
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		b.WriteString("; stderr:\n")
		b.WriteString(s)
	}
	return b.String()
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// String returns the kept bytes, dropping a partial first line when the buffer
// was truncated so the tail starts at a line boundary.
func (t *tailBuffer) String() string {
	s := string(t.buf)
	if len(t.buf) == t.max {
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:]
		}
	}
	return s
}

const stderrTailBytes = 4096
