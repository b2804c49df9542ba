package sshd

// The core: starting and stopping a real sshd without a testing.TB, so that
// programs (bench/sshbench/sshd) can use it as well as tests. sshd.go wraps it
// for tests.

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
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
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
	// SessionPath, when set, is the PATH of login sessions (sshd's SetEnv):
	// e.g. a directory without python3, for a host that lacks it.
	SessionPath string
	// SessionEnv are more variables of login sessions (sshd's SetEnv), e.g.
	// SPARK_HOME for a Spark head node.
	SessionEnv map[string]string
	// MaxSessions, when positive, sets sshd's MaxSessions (sessions per
	// connection); 0 keeps sshd's default (10).
	MaxSessions int
	// Dir is where config, keys, log and the user's home go. It must not exist
	// yet and its parent must be traversable by other users. Empty: a new
	// directory under os.TempDir().
	Dir string
	// UserPrefix starts the throwaway user's name: "amlt" (default) for tests;
	// the bench uses "amlb", so a user left behind says who made it.
	UserPrefix string
}

// Server is a running (or stopped) sshd.
type Server struct {
	Addr               string // 127.0.0.1:port
	Port               int
	User               string
	Password           string // set when Options.Password
	KeyPEM             []byte // the client private key (encrypted when Options.EncryptedKeyPassphrase)
	KeyPath            string // the file KeyPEM was read from
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
	uid      string     // the throwaway user's uid; empty when the current user is used

	mu      sync.Mutex
	cmd     *exec.Cmd
	exit    chan struct{} // closed when cmd has been waited for
	orphans []int         // connection processes a Stop left running

	closeOnce sync.Once
	closeErr  error
}

// UnavailableError says why sshd cannot run here (not installed, not root, ...):
// tests skip with Reason.
type UnavailableError struct{ Reason string }

func (e *UnavailableError) Error() string { return e.Reason }

// Check reports why Launch cannot work here (an *UnavailableError), or nil.
func Check() error {
	_, err := check()
	return err
}

func check() (sshdPath string, err error) {
	if sshdPath = findSSHD(); sshdPath == "" {
		return "", &UnavailableError{"sshd not installed (run scripts/install-sshd.sh)"}
	}
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		return "", &UnavailableError{"ssh-keygen not installed (run scripts/install-sshd.sh)"}
	}
	if os.Geteuid() != 0 {
		return "", &UnavailableError{"the sshd harness needs root: it creates a throwaway user and runs sshd as root"}
	}
	return sshdPath, nil
}

// Launch starts sshd on a free port of 127.0.0.1 with a generated host key and
// a throwaway user (the current user when none can be created; see Note) that
// logs in with a generated client key, and returns once a login succeeds. The
// caller must Close it. On failure everything Launch made is removed again.
func Launch(opts Options) (_ *Server, err error) {
	sshdPath, err := check()
	if err != nil {
		return nil, err
	}
	if opts.HostKeyType == "" {
		opts.HostKeyType = "ed25519"
	}
	if opts.UserPrefix == "" {
		opts.UserPrefix = "amlt"
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, fmt.Errorf("creating the privilege separation directory: %w", err)
	}
	removeStaleUsers()

	// Not t.TempDir: its 0700 parents would keep the unprivileged user (and
	// sshd reading authorized_keys as that user) out.
	var dir string
	if opts.Dir == "" {
		dir, err = os.MkdirTemp("", "aml-sshd-")
	} else if dir, err = filepath.Abs(opts.Dir); err == nil {
		err = os.Mkdir(dir, 0o755)
	}
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Home: filepath.Join(dir, "home"), sshdPath: sshdPath,
		cfgPath: filepath.Join(dir, "sshd_config"), logPath: filepath.Join(dir, "sshd.log")}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}

	// Host key.
	hostKeyPath := filepath.Join(dir, "ssh_host_"+opts.HostKeyType+"_key")
	if _, err := keygen("-q", "-t", opts.HostKeyType, "-N", "", "-C", "aml-test-host", "-f", hostKeyPath); err != nil {
		return nil, err
	}
	pub, err := os.ReadFile(hostKeyPath + ".pub")
	if err != nil {
		return nil, err
	}
	hk, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		return nil, fmt.Errorf("parsing generated host key: %w", err)
	}
	s.HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hk)))
	if s.HostKeyFingerprint, err = fingerprint(hostKeyPath + ".pub"); err != nil {
		return nil, err
	}

	// Client key.
	s.KeyPath = filepath.Join(dir, "client_key")
	if _, err := keygen("-q", "-t", "ed25519", "-N", opts.EncryptedKeyPassphrase, "-C", "aml-test-client", "-f", s.KeyPath); err != nil {
		return nil, err
	}
	if s.KeyPEM, err = os.ReadFile(s.KeyPath); err != nil {
		return nil, err
	}
	s.KeyPassphrase = opts.EncryptedKeyPassphrase
	if opts.EncryptedKeyPassphrase != "" {
		s.signer, err = ssh.ParsePrivateKeyWithPassphrase(s.KeyPEM, []byte(opts.EncryptedKeyPassphrase))
	} else {
		s.signer, err = ssh.ParsePrivateKey(s.KeyPEM)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing generated client key: %w", err)
	}
	clientPub, err := os.ReadFile(s.KeyPath + ".pub")
	if err != nil {
		return nil, err
	}
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authKeys, clientPub, 0o644); err != nil {
		return nil, err
	}

	// User with home; always a password, because sshd without PAM refuses even
	// key logins to a locked ("!") account.
	if err := os.Mkdir(s.Home, 0o755); err != nil {
		return nil, err
	}
	s.Password = randomPassword()
	permitRoot := "no"
	if name, uid, err := createUser(opts.UserPrefix, s.Home, s.Password); err == nil {
		s.User, s.uid = name, uid
	} else {
		cur, cerr := user.Current()
		if cerr != nil {
			return nil, fmt.Errorf("creating a test user failed (%v) and the current user is unknown: %v", err, cerr)
		}
		if opts.Password {
			return nil, &UnavailableError{fmt.Sprintf("sshd: creating a test user failed (%v); password login would need the current user's password", err)}
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
	var setEnv []string
	if opts.SessionPath != "" {
		setEnv = append(setEnv, "PATH="+opts.SessionPath)
	}
	for _, k := range sortedKeys(opts.SessionEnv) {
		setEnv = append(setEnv, k+"="+opts.SessionEnv[k])
	}
	if len(setEnv) > 0 {
		cfg += "SetEnv " + strings.Join(setEnv, " ") + "\n"
	}
	if opts.MaxSessions > 0 {
		cfg += "MaxSessions " + strconv.Itoa(opts.MaxSessions) + "\n"
	}

	// Pick a free port, then start; another process may take it in between, so
	// retry with a new one when sshd cannot bind.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(s.cfgPath, []byte(fmt.Sprintf(cfg, port)), 0o644); err != nil {
			return nil, err
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
		return nil, fmt.Errorf("%v\n--- %s (tail) ---\n%s", lastErr, s.logPath, s.LogTail())
	}
	return s, nil
}

// Close stops sshd by PID and kills the connections it served, kills the
// throwaway user's remaining processes (by uid; as the current user, those
// whose command line names Dir), deletes the user and removes Dir. Calling it
// again does nothing.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.Stop()
		s.DropConnections()
		var errs []error
		if s.uid != "" {
			errs = append(errs, deleteUser(s.User, s.uid))
		} else {
			killMentioning(s.Dir)
		}
		errs = append(errs, os.RemoveAll(s.Dir))
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
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
// keys and port are kept for Relaunch. Stopping a stopped server does nothing.
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

// Relaunch stops the daemon and starts it again on the same port with the same
// host key.
func (s *Server) Relaunch() error {
	s.Stop()
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = s.launch(); err == nil {
			return nil
		}
		// The port can stay busy for a moment after the old listener exits.
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%v\n--- %s (tail) ---\n%s", err, s.logPath, s.LogTail())
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

// Exited is closed when the running daemon exits (also by Stop); nil when
// stopped.
func (s *Server) Exited() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	return s.exit
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

// fingerprint runs `ssh-keygen -lf pubKeyFile` and returns its SHA256:... field.
func fingerprint(pubKeyFile string) (string, error) {
	out, err := keygen("-l", "-E", "sha256", "-f", pubKeyFile)
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	if len(f) < 2 {
		return "", fmt.Errorf("ssh-keygen -lf %s: unexpected output %q", pubKeyFile, out)
	}
	return f[1], nil
}

// keygen runs ssh-keygen with args; the error has its output.
func keygen(args ...string) (string, error) {
	out, err := exec.Command("ssh-keygen", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ssh-keygen %s: %v\n%s", strings.Join(redactN(args), " "), err, out)
	}
	return string(out), nil
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

// userCommentPrefix marks throwaway users with the owning process, so users
// left by a killed test run or bench can be removed by the next one.
// staleCommentPrefixes also has the mark of earlier bench helpers.
const userCommentPrefix = "aml-sshd-harness pid="

var staleCommentPrefixes = []string{userCommentPrefix, "aml-bench-sshd pid="}

var userMu sync.Mutex // useradd/userdel lock /etc/passwd; serialize ours

// createUser adds the user prefix+random with home (owned by it) and password.
func createUser(prefix, home, password string) (name, uid string, err error) {
	userMu.Lock()
	defer userMu.Unlock()
	if _, err := exec.LookPath("useradd"); err != nil {
		return "", "", errors.New("useradd not found")
	}
	name = prefix + randomHex(4)
	var out []byte
	for attempt := 0; attempt < 10; attempt++ {
		out, err = exec.Command("useradd", "-M", "-d", home, "-s", "/bin/sh",
			"-c", userCommentPrefix+strconv.Itoa(os.Getpid()), name).CombinedOutput()
		// Another process may hold the passwd lock.
		if err == nil || !bytes.Contains(out, []byte("lock")) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return "", "", fmt.Errorf("useradd: %v: %s", err, bytes.TrimSpace(out))
	}
	cmd := exec.Command("chpasswd")
	cmd.Stdin = strings.NewReader(name + ":" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = exec.Command("userdel", name).Run()
		return "", "", fmt.Errorf("chpasswd: %v: %s", err, bytes.TrimSpace(out))
	}
	u, err := user.Lookup(name)
	if err != nil {
		_ = exec.Command("userdel", name).Run()
		return "", "", err
	}
	ui, _ := strconv.Atoi(u.Uid)
	gi, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(home, ui, gi); err != nil {
		_ = exec.Command("userdel", name).Run()
		return "", "", err
	}
	return name, u.Uid, nil
}

// deleteUser kills the user's processes (which would make userdel fail) and
// deletes it.
func deleteUser(name, uid string) error {
	userMu.Lock()
	defer userMu.Unlock()
	var out []byte
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		killUID(uid)
		if out, err = exec.Command("userdel", name).CombinedOutput(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("userdel %s: %v: %s", name, err, bytes.TrimSpace(out))
}

// removeStaleUsers deletes throwaway users whose owning process is gone.
func removeStaleUsers() {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return
	}
	type stale struct{ name, uid string }
	var list []stale
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 5 || !strings.HasPrefix(fields[0], "aml") {
			continue
		}
		for _, prefix := range staleCommentPrefixes {
			if !strings.HasPrefix(fields[4], prefix) {
				continue
			}
			pid, err := strconv.Atoi(strings.TrimPrefix(fields[4], prefix))
			if err == nil && pid > 0 && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
				list = append(list, stale{fields[0], fields[2]})
			}
		}
	}
	f.Close()
	userMu.Lock()
	defer userMu.Unlock()
	for _, s := range list {
		killUID(s.uid)
		_ = exec.Command("userdel", s.name).Run()
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
