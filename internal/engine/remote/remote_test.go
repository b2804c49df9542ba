package remote_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
)

func newPool(t *testing.T) *remote.Pool {
	t.Helper()
	p := remote.NewPool()
	t.Cleanup(p.Close)
	return p
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustGet(t *testing.T, p *remote.Pool, ep remote.Endpoint, s *sshd.Server) *remote.Client {
	t.Helper()
	c, err := p.Get(ctxFor(t, 20*time.Second), ep)
	if err != nil {
		t.Fatalf("Get: %v\n--- sshd log ---\n%s", err, s.LogTail())
	}
	return c
}

func mustOutput(t *testing.T, c *remote.Client, cmd string) string {
	t.Helper()
	out, err := c.Output(ctxFor(t, 20*time.Second), cmd)
	if err != nil {
		t.Fatalf("Output(%q): %v", cmd, err)
	}
	return string(out)
}

// generateKey makes a fresh ed25519 key with ssh-keygen and returns the private
// key file's contents and the public key file's path.
func generateKey(t *testing.T, passphrase string) ([]byte, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key")
	sshd.Keygen(t, "-q", "-t", "ed25519", "-N", passphrase, "-f", path)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b, path + ".pub"
}

func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

func assertNoSecret(t *testing.T, err error, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Fatalf("error leaks a secret: %q", err.Error())
		}
	}
}

func TestConnectWithKey(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	c := mustGet(t, newPool(t), s.Endpoint(), s)
	if got := strings.TrimSpace(mustOutput(t, c, "id -un")); got != s.User {
		t.Fatalf("logged in as %q, want %q", got, s.User)
	}
	if got := strings.TrimSpace(mustOutput(t, c, "echo $HOME")); got != s.Home {
		t.Fatalf("HOME = %q, want %q", got, s.Home)
	}
}

func TestConnectWithPassword(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{Password: true})
	ep := s.Endpoint()
	ep.Auth = remote.Auth{Password: s.Password}
	c := mustGet(t, newPool(t), ep, s)
	if got := strings.TrimSpace(mustOutput(t, c, "id -un")); got != s.User {
		t.Fatalf("logged in as %q, want %q", got, s.User)
	}
}

func TestEncryptedKeyWithPassphrase(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{EncryptedKeyPassphrase: "correct horse"})
	if !bytes.Contains(s.KeyPEM, []byte("OPENSSH PRIVATE KEY")) {
		t.Fatalf("unexpected key format")
	}
	ep := s.Endpoint()
	ep.Auth = remote.Auth{PrivateKey: s.KeyPEM, Passphrase: []byte("correct horse")}
	c := mustGet(t, newPool(t), ep, s)
	if got := strings.TrimSpace(mustOutput(t, c, "id -un")); got != s.User {
		t.Fatalf("logged in as %q, want %q", got, s.User)
	}
}

func TestEncryptedKeyErrors(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{EncryptedKeyPassphrase: "correct horse"})
	p := newPool(t)

	ep := s.Endpoint()
	ep.Auth = remote.Auth{PrivateKey: s.KeyPEM}
	_, err := p.Get(ctxFor(t, 10*time.Second), ep)
	if !errors.Is(err, remote.ErrAuth) || !strings.Contains(err.Error(), "private_key is encrypted: set private_key_passphrase") {
		t.Fatalf("missing passphrase: got %v", err)
	}

	ep.Auth.Passphrase = []byte("battery staple")
	// Not retried: an attempt loop would run to the context's deadline. One
	// decode of the key (bcrypt rounds) took up to 7 s on a loaded 2-core
	// machine, so the bound is half of a long deadline, not a timing.
	const deadline = 60 * time.Second
	start := time.Now()
	_, err = p.Get(ctxFor(t, deadline), ep)
	if !errors.Is(err, remote.ErrAuth) || !strings.Contains(err.Error(), "wrong passphrase") {
		t.Fatalf("wrong passphrase: got %v", err)
	}
	if time.Since(start) > deadline/2 {
		t.Fatalf("wrong passphrase took %s of a %s deadline: it must not be retried", time.Since(start), deadline)
	}
	assertNoSecret(t, err, "battery staple", "correct horse", string(s.KeyPEM[40:80]))
}

func TestWrongPasswordFailsFast(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{Password: true})
	ep := s.Endpoint()
	wrong := "wrong-" + s.Password
	ep.Auth = remote.Auth{Password: wrong}
	start := time.Now()
	_, err := newPool(t).Get(ctxFor(t, 30*time.Second), ep)
	elapsed := time.Since(start)
	if !errors.Is(err, remote.ErrAuth) {
		t.Fatalf("want ErrAuth, got %v", err)
	}
	if errors.Is(err, remote.ErrUnreachable) {
		t.Fatalf("auth failure also reported as unreachable: %v", err)
	}
	want := fmt.Sprintf("authentication failed for %s@127.0.0.1:%d (tried: password)", s.User, s.Port)
	if err.Error() != want {
		t.Fatalf("error = %q, want %q", err, want)
	}
	if elapsed > 3*time.Second {
		t.Fatalf("wrong password took %s: it must not be retried", elapsed)
	}
	assertNoSecret(t, err, wrong, s.Password)
	// One attempt only: sshd logged exactly one failed password.
	if n := strings.Count(s.Log(), "Failed password for "+s.User); n != 1 {
		t.Fatalf("sshd saw %d failed passwords, want 1:\n%s", n, s.LogTail())
	}
}

func TestWrongKeyAndBothMethods(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{Password: true})
	other, _ := generateKey(t, "")
	ep := s.Endpoint()
	ep.Auth = remote.Auth{PrivateKey: other}
	_, err := newPool(t).Get(ctxFor(t, 10*time.Second), ep)
	if !errors.Is(err, remote.ErrAuth) || !strings.Contains(err.Error(), "(tried: publickey)") {
		t.Fatalf("wrong key: got %v", err)
	}

	ep.Auth = remote.Auth{PrivateKey: other, Password: "not-it"}
	_, err = newPool(t).Get(ctxFor(t, 10*time.Second), ep)
	if !errors.Is(err, remote.ErrAuth) || !strings.Contains(err.Error(), "(tried: publickey, password)") {
		t.Fatalf("wrong key and password: got %v", err)
	}
	assertNoSecret(t, err, "not-it", string(other[40:80]))
}

func TestPasswordRefusedByServer(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{}) // PasswordAuthentication no
	ep := s.Endpoint()
	ep.Auth = remote.Auth{Password: "whatever-secret"}
	_, err := newPool(t).Get(ctxFor(t, 10*time.Second), ep)
	if !errors.Is(err, remote.ErrAuth) || !strings.Contains(err.Error(), "accepts none of the configured methods") {
		t.Fatalf("got %v", err)
	}
	assertNoSecret(t, err, "whatever-secret")
}

func TestNoCredentials(t *testing.T) {
	t.Parallel()
	_, err := newPool(t).Get(context.Background(), remote.Endpoint{Address: "127.0.0.1", Port: 1, User: "trainer"})
	if !errors.Is(err, remote.ErrAuth) || !strings.Contains(err.Error(), "no credentials for trainer@127.0.0.1:1") {
		t.Fatalf("got %v", err)
	}
}

func TestUnreachableIsBounded(t *testing.T) {
	t.Parallel()
	key, _ := generateKey(t, "")
	port := closedPort(t)
	ep := remote.Endpoint{Address: "127.0.0.1", Port: port, User: "trainer", Auth: remote.Auth{PrivateKey: key}, DialTimeout: time.Second}
	start := time.Now()
	_, err := newPool(t).Get(ctxFor(t, 30*time.Second), ep)
	elapsed := time.Since(start)
	if !errors.Is(err, remote.ErrUnreachable) {
		t.Fatalf("want ErrUnreachable, got %v", err)
	}
	prefix := fmt.Sprintf("cannot reach trainer@127.0.0.1:%d: dial tcp 127.0.0.1:%d: connect: connection refused", port, port)
	if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), "after 4 attempts") {
		t.Fatalf("error = %q, want prefix %q and the attempt count", err, prefix)
	}
	// 4 attempts with 0.25+0.5+1 s of backoff.
	if elapsed < 1500*time.Millisecond || elapsed > 5*time.Second {
		t.Fatalf("unreachable took %s, want the bounded retry (~1.75s)", elapsed)
	}

	// The caller's context bounds it further.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = newPool(t).Get(ctx, ep)
	if !errors.Is(err, remote.ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("with a 300ms context: %v after %s", err, time.Since(start))
	}
}

func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	// A server that accepts TCP and never speaks: the dial timeout must bound
	// each attempt.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	key, _ := generateKey(t, "")
	port := l.Addr().(*net.TCPAddr).Port
	ep := remote.Endpoint{Address: "127.0.0.1", Port: port, User: "trainer", Auth: remote.Auth{PrivateKey: key}, DialTimeout: 300 * time.Millisecond}
	start := time.Now()
	_, err = newPool(t).Get(ctxFor(t, 30*time.Second), ep)
	if !errors.Is(err, remote.ErrUnreachable) || !strings.Contains(err.Error(), "did not finish within 300ms") {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("took %s", time.Since(start))
	}
}

func TestHostKeyPinned(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{HostKeyType: "rsa"})
	ep := s.Endpoint() // pins s.HostKey
	c := mustGet(t, newPool(t), ep, s)
	if c.HostKey() != s.HostKey || c.Fingerprint() != s.HostKeyFingerprint {
		t.Fatalf("host key %q (%s), want %q (%s)", c.HostKey(), c.Fingerprint(), s.HostKey, s.HostKeyFingerprint)
	}
}

func TestHostKeyMismatch(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	_, otherPub := generateKey(t, "")
	pub, err := os.ReadFile(otherPub)
	if err != nil {
		t.Fatal(err)
	}
	ep := s.Endpoint()
	ep.HostKey = strings.TrimSpace(string(pub))
	start := time.Now()
	_, err = newPool(t).Get(ctxFor(t, 10*time.Second), ep)
	if !errors.Is(err, remote.ErrHostKeyMismatch) {
		t.Fatalf("want ErrHostKeyMismatch, got %v", err)
	}
	want := fmt.Sprintf("host key for 127.0.0.1:%d changed: expected %s, got %s; if the host was re-keyed, update host_key",
		s.Port, sshd.Fingerprint(t, otherPub), s.HostKeyFingerprint)
	if err.Error() != want {
		t.Fatalf("error = %q\nwant    %q", err, want)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("mismatch took %s: it must not be retried", time.Since(start))
	}
	// No login happened beyond the harness's readiness check.
	if n := strings.Count(s.Log(), "Accepted publickey"); n != 1 {
		t.Fatalf("%d logins despite the mismatch:\n%s", n, s.LogTail())
	}
}

func TestHostKeyTypeNotOffered(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{}) // ed25519 only
	rsa := filepath.Join(t.TempDir(), "rsa")
	sshd.Keygen(t, "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", rsa)
	pub, err := os.ReadFile(rsa + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	ep := s.Endpoint()
	ep.HostKey = string(pub)
	_, err = newPool(t).Get(ctxFor(t, 10*time.Second), ep)
	if !errors.Is(err, remote.ErrHostKeyMismatch) || !strings.Contains(err.Error(), "offers no ssh-rsa key") {
		t.Fatalf("got %v", err)
	}
}

func TestTrustOnFirstUse(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	ep := s.Endpoint()
	ep.HostKey = ""
	c := mustGet(t, newPool(t), ep, s)
	if c.HostKey() != s.HostKey {
		t.Fatalf("HostKey() = %q, want %q", c.HostKey(), s.HostKey)
	}
	// s.HostKeyFingerprint is what `ssh-keygen -lf` printed for the host key.
	if c.Fingerprint() != s.HostKeyFingerprint || !strings.HasPrefix(c.Fingerprint(), "SHA256:") {
		t.Fatalf("Fingerprint() = %q, ssh-keygen -lf says %q", c.Fingerprint(), s.HostKeyFingerprint)
	}
	// Pinning what TOFU returned works on a fresh pool.
	ep.HostKey = c.HostKey()
	mustGet(t, newPool(t), ep, s)
}

func TestSharedClientChecksPin(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	p := newPool(t)
	tofu := s.Endpoint()
	tofu.HostKey = ""
	mustGet(t, p, tofu, s)
	_, otherPub := generateKey(t, "")
	pub, _ := os.ReadFile(otherPub)
	pinned := s.Endpoint()
	pinned.HostKey = string(pub)
	if _, err := p.Get(ctxFor(t, 10*time.Second), pinned); !errors.Is(err, remote.ErrHostKeyMismatch) {
		t.Fatalf("a shared connection must still be checked against the pin: %v", err)
	}
}

func TestInsecureIgnoreHostKey(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	_, otherPub := generateKey(t, "")
	pub, _ := os.ReadFile(otherPub)
	ep := s.Endpoint()
	ep.HostKey = string(pub) // wrong, but ignored
	ep.InsecureIgnoreHostKey = true
	c := mustGet(t, newPool(t), ep, s)
	if c.HostKey() != s.HostKey {
		t.Fatalf("HostKey() = %q, want %q", c.HostKey(), s.HostKey)
	}
}

func TestRunExitStatusAndOutput(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	c := mustGet(t, newPool(t), s.Endpoint(), s)
	ctx := ctxFor(t, 20*time.Second)

	var stdout, stderr bytes.Buffer
	err := c.Run(ctx, "echo out; echo oops >&2; exit 3", nil, &stdout, &stderr)
	var ee *remote.ExitError
	if !errors.As(err, &ee) || ee.Status != 3 || ee.Signal != "" {
		t.Fatalf("want *ExitError{Status:3}, got %#v (%v)", err, err)
	}
	if stdout.String() != "out\n" || stderr.String() != "oops\n" || strings.TrimSpace(ee.Stderr) != "oops" {
		t.Fatalf("stdout %q stderr %q tail %q", stdout.String(), stderr.String(), ee.Stderr)
	}
	if !strings.Contains(err.Error(), "exited with status 3") || !strings.Contains(err.Error(), s.User+"@127.0.0.1:"+strconv.Itoa(s.Port)) {
		t.Fatalf("message: %v", err)
	}

	out, err := c.Output(ctx, "printf 'a\\nb\\n'; echo noise >&2")
	if err != nil || string(out) != "a\nb\n" {
		t.Fatalf("Output = %q, %v", out, err)
	}
	_, err = c.Output(ctx, "echo the-reason >&2; false")
	if !errors.As(err, &ee) || ee.Status != 1 || !strings.Contains(err.Error(), "the-reason") {
		t.Fatalf("Output failure must carry stderr: %v", err)
	}

	err = c.Run(ctx, "kill -TERM $$", nil, nil, nil)
	if !errors.As(err, &ee) || ee.Signal != "TERM" || ee.Status != -1 {
		t.Fatalf("killed by signal: %#v", err)
	}

	// Long stderr: only the tail is kept.
	_, err = c.Output(ctx, "i=0; while [ $i -lt 2000 ]; do echo line$i >&2; i=$((i+1)); done; echo LAST >&2; exit 2")
	if !errors.As(err, &ee) || !strings.HasSuffix(strings.TrimSpace(ee.Stderr), "LAST") || len(ee.Stderr) > 4096 || strings.Contains(ee.Stderr, "line0\n") {
		t.Fatalf("stderr tail: %d bytes, %v", len(ee.Stderr), err)
	}
}

func TestNoPTYAndEmptyStdin(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	c := mustGet(t, newPool(t), s.Endpoint(), s)
	// With nil stdin, a reader sees EOF at once instead of hanging.
	if got := mustOutput(t, c, "cat; tty >/dev/null && echo tty || echo notty"); got != "notty\n" {
		t.Fatalf("got %q", got)
	}
}

func TestStdinStreaming(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	c := mustGet(t, newPool(t), s.Endpoint(), s)
	const n = 3 << 20
	var out bytes.Buffer
	err := c.Run(ctxFor(t, 30*time.Second), "wc -c", io.LimitReader(zeroReader{}, n), &out, nil)
	if err != nil || strings.TrimSpace(out.String()) != strconv.Itoa(n) {
		t.Fatalf("wc -c = %q, %v", out.String(), err)
	}
	out.Reset()
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 5; i++ {
			fmt.Fprintf(pw, "line %d\n", i)
			time.Sleep(10 * time.Millisecond)
		}
		pw.Close()
	}()
	if err := c.Run(ctxFor(t, 10*time.Second), "sed 's/^/> /'", pr, &out, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "> line 0\n") || strings.Count(out.String(), "\n") != 5 {
		t.Fatalf("got %q", out.String())
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func TestUpload(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	c := mustGet(t, newPool(t), s.Endpoint(), s)
	ctx := ctxFor(t, 30*time.Second)

	data := make([]byte, 5<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	dir := s.Home + "/it's a dir"
	mustOutput(t, c, "mkdir -p "+remote.ShellQuote(dir))
	dst := dir + "/blob $(x).bin"
	if err := c.Upload(ctx, dst, bytes.NewReader(data), 0o640); err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(mustOutput(t, c, "sha256sum "+remote.ShellQuote(dst)))
	if len(got) == 0 || got[0] != hex.EncodeToString(sum[:]) {
		t.Fatalf("remote sha256 %v, want %x", got, sum)
	}
	if mode := strings.TrimSpace(mustOutput(t, c, "stat -c %a "+remote.ShellQuote(dst))); mode != "640" {
		t.Fatalf("mode %s, want 640", mode)
	}
	if left := mustOutput(t, c, "ls -A "+remote.ShellQuote(dir)); left != "blob $(x).bin\n" {
		t.Fatalf("temporary files left: %q", left)
	}

	// Overwrite atomically with new content and mode.
	if err := c.Upload(ctx, dst, strings.NewReader("small\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := mustOutput(t, c, "cat "+remote.ShellQuote(dst)+"; stat -c %a "+remote.ShellQuote(dst)); got != "small\n755\n" {
		t.Fatalf("got %q", got)
	}

	// A failing upload names the path and leaves no temporary file.
	err := c.Upload(ctx, s.Home+"/missing-dir/f", strings.NewReader("x"), 0o600)
	if err == nil || !strings.Contains(err.Error(), "/missing-dir/f") {
		t.Fatalf("upload into a missing directory: %v", err)
	}
	if _, err := c.Output(ctx, "test ! -e "+remote.ShellQuote(s.Home+"/missing-dir")); err != nil {
		t.Fatal(err)
	}
	// A reader that fails mid-stream: the target keeps its old content.
	err = c.Upload(ctx, dst, io.MultiReader(strings.NewReader("partial"), errReader{}), 0o644)
	if err == nil {
		t.Fatalf("upload from a failing reader succeeded")
	}
	if got := mustOutput(t, c, "cat "+remote.ShellQuote(dst)+"; ls -A "+remote.ShellQuote(dir)); got != "small\nblob $(x).bin\n" {
		t.Fatalf("after a failed upload: %q", got)
	}

	for _, bad := range []string{"relative/path", "", "/", "/tmp/dir/"} {
		if err := c.Upload(ctx, bad, strings.NewReader("x"), 0o600); err == nil {
			t.Fatalf("Upload(%q) accepted", bad)
		}
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("source broke") }

func TestShellQuoteRoundTrip(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	c := mustGet(t, newPool(t), s.Endpoint(), s)
	for _, in := range []string{"", "plain", "two words", "it's", `a"b`, "$HOME", "`id`", "$(id)", "a\nb", "*", "\\", "'''", "-n", "ünï"} {
		got := mustOutput(t, c, "printf '%s|' "+remote.ShellQuote(in))
		if got != in+"|" {
			t.Errorf("ShellQuote(%q) = %s came back as %q", in, remote.ShellQuote(in), got)
		}
	}
	if remote.ShellQuote("/a/b-c_d.e") != "/a/b-c_d.e" {
		t.Errorf("safe words stay unquoted")
	}
}

func TestConnectionSharing(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	p := newPool(t)
	ep := s.Endpoint()

	// Concurrent first Gets dial once.
	var wg sync.WaitGroup
	clients := make([]*remote.Client, 8)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.Get(ctxFor(t, 20*time.Second), ep)
			if err != nil {
				t.Error(err)
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	for _, c := range clients {
		if c != clients[0] {
			t.Fatalf("Get returned different clients for one endpoint")
		}
	}
	c := clients[0]

	// 20 concurrent sessions, more than a stock sshd's MaxSessions (10).
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := c.Output(ctxFor(t, 30*time.Second), fmt.Sprintf("sleep 0.2; echo %d", i))
			if err == nil && strings.TrimSpace(string(out)) != strconv.Itoa(i) {
				err = fmt.Errorf("session %d got %q", i, out)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent session: %v\n%s", err, s.LogTail())
		}
	}
	// One TCP connection from the pool (plus the harness's readiness check).
	if n := strings.Count(s.Log(), "Accepted publickey for "+s.User); n != 2 {
		t.Fatalf("sshd accepted %d logins, want 2 (harness + one shared connection)", n)
	}
	if c2 := mustGet(t, p, ep, s); c2 != c {
		t.Fatalf("second Get dialed again")
	}
}

func TestRunCancel(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	c := mustGet(t, newPool(t), s.Endpoint(), s)
	marker := s.Home + "/cancelled"
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Run(ctx, "sleep 30; touch "+remote.ShellQuote(marker), nil, nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("cancel: %v after %s", err, time.Since(start))
	}
	// The client stays usable.
	if got := mustOutput(t, c, "echo alive"); got != "alive\n" {
		t.Fatalf("got %q", got)
	}
	// The remote command got SIGKILL (or lost its session): no sleep 30 left.
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := c.Output(ctxFor(t, 5*time.Second), "ps -o args= -u "+s.User+" | grep -c '^sleep 30' || true")
		if strings.TrimSpace(string(out)) == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote sleep still running after cancel")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestKeepAliveClosesDeadLink(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	p := newPool(t)
	ep := s.Endpoint()
	ep.KeepAliveInterval = 200 * time.Millisecond
	c := mustGet(t, p, ep, s)
	mustOutput(t, c, "true")
	time.Sleep(500 * time.Millisecond) // keepalives answered: still up
	if c.Err() != nil {
		t.Fatalf("healthy link closed: %v", c.Err())
	}

	// The link goes silent: TCP stays open, nothing answers.
	kill := s.FreezeConnections()
	defer kill()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("keepalives did not close a dead link")
	}
	if !errors.Is(c.Err(), remote.ErrConnectionLost) || !strings.Contains(c.Err().Error(), "no answer to 3 keepalives") {
		t.Fatalf("Err() = %v", c.Err())
	}
	start := time.Now()
	err := c.Run(ctxFor(t, 10*time.Second), "true", nil, nil, nil)
	if !errors.Is(err, remote.ErrConnectionLost) || time.Since(start) > time.Second {
		t.Fatalf("Run on a dead client: %v after %s", err, time.Since(start))
	}
	kill()
	c2 := mustGet(t, p, ep, s)
	if c2 == c {
		t.Fatalf("pool returned the dead client")
	}
	mustOutput(t, c2, "true")
}

func TestRunBlockedOnDeadLinkFails(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	ep := s.Endpoint()
	ep.KeepAliveInterval = 200 * time.Millisecond
	c := mustGet(t, newPool(t), ep, s)
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background(), "sleep 60", nil, nil, nil) }()
	time.Sleep(300 * time.Millisecond)
	kill := s.FreezeConnections()
	defer kill()
	select {
	case err := <-done:
		if !errors.Is(err, remote.ErrConnectionLost) {
			t.Fatalf("got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Run hung on a dead link")
	}
}

func TestSurvivesStopAndRedialsAfterRestart(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	p := newPool(t)
	ep := s.Endpoint()
	ep.DialTimeout = time.Second
	c := mustGet(t, p, ep, s)

	// Stopping the daemon leaves established connections alone.
	s.Stop()
	if got := mustOutput(t, c, "echo still"); got != "still\n" {
		t.Fatalf("got %q", got)
	}
	// Now kill the connection's own sshd processes: the link ends for real.
	if n := s.DropConnections(); n == 0 {
		t.Fatalf("no connection processes found")
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("client did not notice the dropped connection")
	}
	if err := c.Run(ctxFor(t, 5*time.Second), "true", nil, nil, nil); !errors.Is(err, remote.ErrConnectionLost) {
		t.Fatalf("Run on the dropped client: %v", err)
	}
	// Daemon down: Get fails as unreachable (bounded).
	start := time.Now()
	if _, err := p.Get(ctxFor(t, 10*time.Second), ep); !errors.Is(err, remote.ErrUnreachable) || time.Since(start) > 5*time.Second {
		t.Fatalf("Get while stopped: %v after %s", err, time.Since(start))
	}
	s.Restart(t)
	c2 := mustGet(t, p, ep, s)
	if c2 == c {
		t.Fatalf("pool returned the dead client")
	}
	if c2.HostKey() != s.HostKey {
		t.Fatalf("host key changed across restart")
	}
	mustOutput(t, c2, "true")
}

func TestGetRetriesUntilServerComesBack(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{})
	s.Stop()
	go func() {
		time.Sleep(400 * time.Millisecond)
		s.Restart(t)
	}()
	ep := s.Endpoint()
	c, err := newPool(t).Get(ctxFor(t, 20*time.Second), ep)
	if err != nil {
		t.Fatalf("Get did not retry until sshd was back: %v", err)
	}
	mustOutput(t, c, "true")
}

func TestBastion(t *testing.T) {
	t.Parallel()
	target := sshd.Start(t, sshd.Options{})
	bastion := sshd.StartBastion(t, target)
	p := newPool(t)
	bep := bastion.Endpoint()
	ep := target.Endpoint()
	ep.Bastion = &bep
	if want := fmt.Sprintf("%s@127.0.0.1:%d via %s@127.0.0.1:%d", target.User, target.Port, bastion.User, bastion.Port); ep.Key() != want {
		t.Fatalf("Key() = %q, want %q", ep.Key(), want)
	}
	c := mustGet(t, p, ep, target)
	if got := strings.TrimSpace(mustOutput(t, c, "id -un")); got != target.User {
		t.Fatalf("got %q", got)
	}
	if !strings.Contains(bastion.Log(), "Accepted publickey for "+bastion.User) {
		t.Fatalf("the bastion saw no login:\n%s", bastion.LogTail())
	}
	// The bastion forwards only to the target.
	other := sshd.Start(t, sshd.Options{})
	oep := other.Endpoint()
	oep.Bastion = &bep
	oep.DialTimeout = time.Second
	if _, err := p.Get(ctxFor(t, 10*time.Second), oep); !errors.Is(err, remote.ErrUnreachable) || !strings.Contains(err.Error(), "via "+bastion.User) {
		t.Fatalf("forward the bastion prohibits: %v", err)
	}
	// Cutting the bastion's connection cuts the tunnelled one too: the target
	// really was reached through it.
	bastion.DropConnections()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("target connection survived the bastion's")
	}
	// And the pool builds both again.
	c2 := mustGet(t, p, ep, target)
	mustOutput(t, c2, "true")
}

func TestBastionAuthFailure(t *testing.T) {
	t.Parallel()
	target := sshd.Start(t, sshd.Options{})
	bastion := sshd.StartBastion(t, target)
	other, _ := generateKey(t, "")
	bep := bastion.Endpoint()
	bep.Auth = remote.Auth{PrivateKey: other}
	ep := target.Endpoint()
	ep.Bastion = &bep
	_, err := newPool(t).Get(ctxFor(t, 10*time.Second), ep)
	if !errors.Is(err, remote.ErrAuth) || !strings.Contains(err.Error(), "bastion") || !strings.Contains(err.Error(), bastion.User+"@") {
		t.Fatalf("got %v", err)
	}
}

func TestPoolCloseStopsEverything(t *testing.T) {
	s := sshd.Start(t, sshd.Options{})
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	p := remote.NewPool()
	ep := s.Endpoint()
	ep.KeepAliveInterval = 50 * time.Millisecond
	c, err := p.Get(ctxFor(t, 10*time.Second), ep)
	if err != nil {
		t.Fatal(err)
	}
	mustOutput(t, c, "true")
	time.Sleep(200 * time.Millisecond)
	p.Close()
	if err := c.Run(ctxFor(t, 5*time.Second), "true", nil, nil, nil); !errors.Is(err, remote.ErrConnectionLost) {
		t.Fatalf("Run after Close: %v", err)
	}
	if _, err := p.Get(ctxFor(t, 5*time.Second), ep); err == nil {
		t.Fatalf("Get after Close succeeded")
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after Close\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	t.Parallel()
	s := sshd.Start(t, sshd.Options{Password: true})
	secret := "S3cr3t-" + s.Password
	_, pub := generateKey(t, "")
	wrongHost, _ := os.ReadFile(pub)
	cases := map[string]remote.Endpoint{}
	ep := s.Endpoint()
	ep.Auth = remote.Auth{Password: secret}
	cases["wrong password"] = ep
	ep.HostKey = string(wrongHost)
	cases["host key mismatch"] = ep
	ep = s.Endpoint()
	ep.Port = closedPort(t)
	ep.DialTimeout = 200 * time.Millisecond
	ep.Auth = remote.Auth{Password: secret}
	cases["unreachable"] = ep
	ep = s.Endpoint()
	ep.Auth = remote.Auth{PrivateKey: []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n" + secret + "\n-----END OPENSSH PRIVATE KEY-----\n"), Passphrase: []byte(secret)}
	cases["garbage key"] = ep
	for name, ep := range cases {
		_, err := newPool(t).Get(ctxFor(t, 10*time.Second), ep)
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		assertNoSecret(t, err, secret, s.Password, string(s.KeyPEM[40:80]))
		if !strings.Contains(err.Error(), "127.0.0.1:") && name != "garbage key" {
			t.Fatalf("%s: error does not name the host: %v", name, err)
		}
	}
}

func TestEndpointValidation(t *testing.T) {
	t.Parallel()
	p := newPool(t)
	for _, ep := range []remote.Endpoint{
		{Port: 22, User: "u"},
		{Address: "h"},
		{Address: "h", User: "u", Port: 70000},
		{Address: "h", User: "u", HostKey: "not a key"},
	} {
		if _, err := p.Get(context.Background(), ep); err == nil {
			t.Fatalf("%+v accepted", ep)
		}
	}
	ep := remote.Endpoint{Address: "::1", User: "u"}
	if ep.Key() != "u@[::1]:22" {
		t.Fatalf("Key() = %q", ep.Key())
	}
}

func TestAgentAuth(t *testing.T) {
	// Not parallel: SSH_AUTH_SOCK is process-wide.
	s := sshd.Start(t, sshd.Options{})
	agentBin, err := exec.LookPath("ssh-agent")
	if err != nil {
		t.Skip("ssh-agent not installed")
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	agent := exec.Command(agentBin, "-D", "-a", sock)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 100 {
			t.Fatalf("ssh-agent did not create %s", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, s.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	add := exec.Command("ssh-add", "-q", keyFile)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v: %s", err, out)
	}
	t.Setenv("SSH_AUTH_SOCK", sock)
	ep := s.Endpoint()
	ep.Auth = remote.Auth{UseAgent: true}
	c := mustGet(t, newPool(t), ep, s)
	if got := strings.TrimSpace(mustOutput(t, c, "id -un")); got != s.User {
		t.Fatalf("got %q", got)
	}

	t.Setenv("SSH_AUTH_SOCK", "")
	if _, err := newPool(t).Get(ctxFor(t, 5*time.Second), ep); !errors.Is(err, remote.ErrAuth) || !strings.Contains(err.Error(), "SSH_AUTH_SOCK") {
		t.Fatalf("no agent: %v", err)
	}
}
