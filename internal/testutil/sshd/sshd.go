// Package sshd starts a real OpenSSH sshd on 127.0.0.1 for tests, with a
// generated host key, a throwaway user that can log in with a generated key
// (and optionally a password), and helpers to stop, restart and cut its
// connections. Tests skip with the reason when sshd is missing or not running
// as root; scripts/install-sshd.sh installs it.
package sshd

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/openaml/terraform-provider-aml/internal/engine/remote"
)

// Options shape the server.
type Options struct {
	// Password enables password login with a generated password (Server.Password).
	Password bool
	// EncryptedKeyPassphrase, when set, encrypts the generated client key
	// (Server.KeyPEM) with it.
	EncryptedKeyPassphrase string
	// HostKeyType is ssh-keygen's -t: "ed25519" (default), "ecdsa" or "rsa".
	HostKeyType string
	// PermitOpen limits TCP forwarding to these host:port targets (a bastion);
	// empty leaves forwarding unrestricted.
	PermitOpen []string
}

// Server is a running (or stopped) sshd.
type Server struct {
	Addr               string // 127.0.0.1:port
	Port               int
	User               string
	Password           string // set when Options.Password
	KeyPEM             []byte // the client private key (encrypted when Options.EncryptedKeyPassphrase)
	KeyPassphrase      string
	HostKey            string // authorized_keys form
	HostKeyFingerprint string // as `ssh-keygen -lf` prints it
	Home               string // the user's home directory, owned by the user
	Dir                string // config, keys, pid file and sshd.log
	// Note says how the server differs from the usual setup (e.g. the current
	// user is used because no user could be created); empty normally.
	Note string

	sshdPath string
	cfgPath  string
	logPath  string
	signer   ssh.Signer // client key, for the readiness check

	mu      sync.Mutex
	cmd     *exec.Cmd
	exit    chan struct{} // closed when cmd has been waited for
	orphans []int         // connection processes a Stop left running
}

// Start starts sshd and registers its shutdown (and the user's removal) with
// t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	sshdPath := findSSHD()
	if sshdPath == "" {
		t.Skip("sshd not installed (run scripts/install-sshd.sh)")
	}
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed (run scripts/install-sshd.sh)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the sshd harness needs root: it creates a throwaway user and runs sshd as root")
	}
	if opts.HostKeyType == "" {
		opts.HostKeyType = "ed25519"
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("sshd: creating the privilege separation directory: %v", err)
	}
	removeStaleUsers()

	// Not t.TempDir: its 0700 parents would keep the unprivileged user (and
	// sshd reading authorized_keys as that user) out.
	dir, err := os.MkdirTemp("", "aml-sshd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &Server{Dir: dir, Home: filepath.Join(dir, "home"), sshdPath: sshdPath,
		cfgPath: filepath.Join(dir, "sshd_config"), logPath: filepath.Join(dir, "sshd.log")}

	// Host key.
	hostKeyPath := filepath.Join(dir, "ssh_host_"+opts.HostKeyType+"_key")
	keygen(t, "-q", "-t", opts.HostKeyType, "-N", "", "-C", "aml-test-host", "-f", hostKeyPath)
	pub, err := os.ReadFile(hostKeyPath + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	hk, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		t.Fatalf("sshd: parsing generated host key: %v", err)
	}
	s.HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hk)))
	s.HostKeyFingerprint = Fingerprint(t, hostKeyPath+".pub")

	// Client key.
	clientKeyPath := filepath.Join(dir, "client_key")
	keygen(t, "-q", "-t", "ed25519", "-N", opts.EncryptedKeyPassphrase, "-C", "aml-test-client", "-f", clientKeyPath)
	if s.KeyPEM, err = os.ReadFile(clientKeyPath); err != nil {
		t.Fatal(err)
	}
	s.KeyPassphrase = opts.EncryptedKeyPassphrase
	if opts.EncryptedKeyPassphrase != "" {
		s.signer, err = ssh.ParsePrivateKeyWithPassphrase(s.KeyPEM, []byte(opts.EncryptedKeyPassphrase))
	} else {
		s.signer, err = ssh.ParsePrivateKey(s.KeyPEM)
	}
	if err != nil {
		t.Fatalf("sshd: parsing generated client key: %v", err)
	}
	clientPub, err := os.ReadFile(clientKeyPath + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authKeys, clientPub, 0o644); err != nil {
		t.Fatal(err)
	}

	// User with home; always a password, because sshd without PAM refuses even
	// key logins to a locked ("!") account.
	if err := os.Mkdir(s.Home, 0o755); err != nil {
		t.Fatal(err)
	}
	s.Password = randomPassword()
	permitRoot := "no"
	if name, err := createUser(s.Home, s.Password); err == nil {
		s.User = name
		t.Cleanup(func() { deleteUser(t, name) })
	} else {
		cur, cerr := user.Current()
		if cerr != nil {
			t.Fatalf("sshd: creating a test user failed (%v) and the current user is unknown: %v", err, cerr)
		}
		if opts.Password {
			t.Skipf("sshd: creating a test user failed (%v); password login would need the current user's password", err)
		}
		s.User = cur.Username
		s.Password = ""
		permitRoot = "prohibit-password"
		s.Note = fmt.Sprintf("creating a test user failed (%v); logging in as the current user %s", err, cur.Username)
	}
	if !opts.Password {
		s.Password = "" // set on the account, but not offered
	}

	cfg := strings.Join([]string{
		"ListenAddress 127.0.0.1",
		"Port %d",
		"HostKey " + hostKeyPath,
		"AuthorizedKeysFile " + authKeys,
		"PasswordAuthentication " + yesNo(opts.Password),
		"KbdInteractiveAuthentication no",
		"PubkeyAuthentication yes",
		"UsePAM no",
		"StrictModes no",
		"PermitRootLogin " + permitRoot,
		"AllowUsers " + s.User,
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"Subsystem sftp internal-sftp",
		"LogLevel VERBOSE",
		"UseDNS no",
		"PrintMotd no",
		"PrintLastLog no",
		"AllowTcpForwarding yes",
		"MaxStartups 50:30:100",
	}, "\n") + "\n"
	if len(opts.PermitOpen) > 0 {
		cfg += "PermitOpen " + strings.Join(opts.PermitOpen, " ") + "\n"
	}

	// Pick a free port, then start; another process may take it in between, so
	// retry with a new one when sshd cannot bind.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(s.cfgPath, []byte(fmt.Sprintf(cfg, port)), 0o644); err != nil {
			t.Fatal(err)
		}
		s.Port, s.Addr = port, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.launch(); lastErr == nil {
			break
		}
		if !strings.Contains(s.LogTail(), "Address already in use") {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("sshd: %v\n--- %s (tail) ---\n%s", lastErr, s.logPath, s.LogTail())
	}
	t.Cleanup(func() {
		s.Stop()
		s.DropConnections()
	})
	return s
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

// launch starts sshd in the foreground of a child process and waits until it
// completes an SSH handshake and login.
func (s *Server) launch() error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(s.sshdPath, "-D", "-e", "-f", s.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.sshdPath, err)
	}
	exit := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exit) }()
	s.mu.Lock()
	s.cmd, s.exit = cmd, exit
	s.mu.Unlock()

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exit:
			return fmt.Errorf("sshd exited at startup: %v", cmd.ProcessState)
		default:
		}
		err := s.handshake()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("sshd on %s not ready after 10s: %v", s.Addr, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// handshake logs in once with the client key.
func (s *Server) handshake() error {
	cfg := &ssh.ClientConfig{
		User:            s.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(s.signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         2 * time.Second,
	}
	c, err := ssh.Dial("tcp", s.Addr, cfg)
	if err != nil {
		return err
	}
	return c.Close()
}

// Stop stops the daemon by PID and waits for it. Established connections keep
// their own sshd processes, as with a real `systemctl stop ssh`. The config,
// keys and port are kept for Restart. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	// Remember the connections' processes: once the daemon is gone they are
	// re-parented and could no longer be found for DropConnections.
	left := descendants(cmd.Process.Pid)
	s.mu.Lock()
	s.orphans = append(s.orphans, left...)
	s.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exit:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exit
	}
}

// Restart starts the daemon again on the same port with the same host key.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = s.launch(); err == nil {
			return
		}
		// The port can stay busy for a moment after the old listener exits.
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("sshd restart: %v\n--- %s (tail) ---\n%s", err, s.logPath, s.LogTail())
}

// PID is the daemon's process id, 0 when stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// ConnectionPIDs lists the per-connection sshd processes (and what they run):
// every descendant of the running daemon, plus those a Stop left running.
func (s *Server) ConnectionPIDs() []int {
	var pids []int
	if pid := s.PID(); pid != 0 {
		pids = descendants(pid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	alive := s.orphans[:0]
	for _, p := range s.orphans {
		if isRunning(p) {
			alive = append(alive, p)
		}
	}
	s.orphans = alive
	// An orphan may have forked since Stop (sshd forks the post-auth child a
	// moment after the client sees the login succeed), so walk below each.
	for _, p := range alive {
		pids = append(pids, p)
		pids = append(pids, descendants(p)...)
	}
	return pids
}

// DropConnections kills every established connection for real: SIGKILL to the
// per-connection sshd processes (also those of a stopped daemon), so clients
// see the TCP connection end. A running daemon keeps listening.
func (s *Server) DropConnections() int {
	return s.signalConnections(syscall.SIGKILL)
}

// FreezeConnections SIGSTOPs the per-connection processes: the TCP connections
// stay open but nothing answers, like a host that vanished from the network.
// The returned func kills them (call it before the test ends).
func (s *Server) FreezeConnections() (kill func()) {
	pids := s.ConnectionPIDs()
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGSTOP)
	}
	return func() {
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
			_ = syscall.Kill(p, syscall.SIGCONT)
		}
	}
}

func (s *Server) signalConnections(sig syscall.Signal) int {
	pids := s.ConnectionPIDs()
	for _, p := range pids {
		_ = syscall.Kill(p, sig)
	}
	return len(pids)
}

// Log is sshd's whole log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// LogTail is the last lines of sshd's log, for failure messages.
func (s *Server) LogTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// Fingerprint runs `ssh-keygen -lf pubKeyFile` and returns its SHA256:... field.
func Fingerprint(t testing.TB, pubKeyFile string) string {
	t.Helper()
	out := keygen(t, "-l", "-E", "sha256", "-f", pubKeyFile)
	f := strings.Fields(out)
	if len(f) < 2 {
		t.Fatalf("ssh-keygen -lf %s: unexpected output %q", pubKeyFile, out)
	}
	return f[1]
}

// Keygen runs ssh-keygen with args (for tests that need extra keys).
func Keygen(t testing.TB, args ...string) string {
	t.Helper()
	return keygen(t, args...)
}

func keygen(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ssh-keygen", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(redactN(args), " "), err, out)
	}
	return string(out)
}

// redactN hides ssh-keygen's -N passphrase in failure messages.
func redactN(args []string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "-N" && out[i+1] != "" {
			out[i+1] = "<redacted>"
		}
	}
	return out
}

func findSSHD() string {
	if p, err := exec.LookPath("sshd"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs // sshd re-execs itself and insists on an absolute path
		}
	}
	for _, p := range []string{"/usr/sbin/sshd", "/usr/local/sbin/sshd"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// randomPassword has characters a shell or chpasswd might mishandle, so the
// tests prove they are passed through untouched.
func randomPassword() string {
	return "Pw-" + randomHex(8) + "$!' \"x%"
}

// userComment marks harness users with the owning process, so users left by a
// killed test run can be removed by the next one.
const userCommentPrefix = "aml-sshd-harness pid="

var userMu sync.Mutex // useradd/userdel lock /etc/passwd; serialize ours

func createUser(home, password string) (string, error) {
	userMu.Lock()
	defer userMu.Unlock()
	if _, err := exec.LookPath("useradd"); err != nil {
		return "", errors.New("useradd not found")
	}
	name := "amlt" + randomHex(4)
	var out []byte
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		out, err = exec.Command("useradd", "-M", "-d", home, "-s", "/bin/sh",
			"-c", userCommentPrefix+strconv.Itoa(os.Getpid()), name).CombinedOutput()
		// Another test binary may hold the passwd lock.
		if err == nil || !bytes.Contains(out, []byte("lock")) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return "", fmt.Errorf("useradd: %v: %s", err, bytes.TrimSpace(out))
	}
	cmd := exec.Command("chpasswd")
	cmd.Stdin = strings.NewReader(name + ":" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = exec.Command("userdel", name).Run()
		return "", fmt.Errorf("chpasswd: %v: %s", err, bytes.TrimSpace(out))
	}
	u, err := user.Lookup(name)
	if err != nil {
		_ = exec.Command("userdel", name).Run()
		return "", err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(home, uid, gid); err != nil {
		_ = exec.Command("userdel", name).Run()
		return "", err
	}
	return name, nil
}

func deleteUser(t testing.TB, name string) {
	userMu.Lock()
	defer userMu.Unlock()
	// Processes the test left behind under this user would make userdel fail.
	killUserProcesses(name)
	var out []byte
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		if out, err = exec.Command("userdel", name).CombinedOutput(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("sshd: userdel %s: %v: %s", name, err, bytes.TrimSpace(out))
}

// removeStaleUsers deletes harness users whose test process is gone.
func removeStaleUsers() {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return
	}
	var stale []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 5 || !strings.HasPrefix(fields[0], "amlt") || !strings.HasPrefix(fields[4], userCommentPrefix) {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimPrefix(fields[4], userCommentPrefix))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			stale = append(stale, fields[0])
		}
	}
	f.Close()
	userMu.Lock()
	defer userMu.Unlock()
	for _, name := range stale {
		killUserProcesses(name)
		_ = exec.Command("userdel", name).Run()
	}
}
