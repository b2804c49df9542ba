// Command sshd starts a real OpenSSH sshd on 127.0.0.1 for bench/ssh.sh, the same way
// internal/testutil/sshd does for the tests (that package takes a testing.TB): a generated
// ed25519 host key, a generated client key, a throwaway user created with useradd (or, when
// that fails, the current user with PermitRootLogin prohibit-password), StrictModes no,
// AllowUsers, key login only.
//
//	sshd -dir DIR
//
// DIR must not exist yet; its parent must be traversable by other users (the throwaway user's
// home is DIR/home). When sshd accepts a login, one line of JSON goes to stdout:
//
//	{"port":..., "user":"...", "group":"...", "home":"...", "key_path":"...", "host_key":"ssh-ed25519 ...", "sshd_pid":..., "note":"..."}
//
// On SIGTERM or SIGINT it stops sshd by PID, kills the processes the bench left on the host
// (every process of the throwaway user, found by uid; or, as the current user, every process
// whose command line names DIR), deletes the user and removes DIR, then exits 0.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

const commentPrefix = "aml-bench-sshd pid="

type info struct {
	Port    int    `json:"port"`
	User    string `json:"user"`
	Group   string `json:"group"`
	Home    string `json:"home"`
	KeyPath string `json:"key_path"`
	HostKey string `json:"host_key"`
	SSHDPID int    `json:"sshd_pid"`
	Note    string `json:"note,omitempty"`
}

var cleanups []func()

func fatal(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "sshbench/sshd: "+format+"\n", a...)
	runCleanups()
	os.Exit(1)
}

func runCleanups() {
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
}

func main() {
	dir := flag.String("dir", "", "directory for config, keys, log and the user's home (must not exist)")
	flag.Parse()
	if *dir == "" {
		fatal("-dir is required")
	}
	// Signals that arrive during start-up still clean up.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	sshdPath := findSSHD()
	if sshdPath == "" {
		fatal("sshd not installed (run scripts/install-sshd.sh)")
	}
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		fatal("ssh-keygen not installed (run scripts/install-sshd.sh)")
	}
	if os.Geteuid() != 0 {
		fatal("needs root: it creates a throwaway user and runs sshd as root")
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		fatal("creating the privilege separation directory: %v", err)
	}
	removeStaleUsers()

	d, err := filepath.Abs(*dir)
	if err != nil {
		fatal("%v", err)
	}
	if err := os.Mkdir(d, 0o755); err != nil {
		fatal("%v", err)
	}
	cleanups = append(cleanups, func() { _ = os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		fatal("%v", err)
	}

	hostKeyPath := filepath.Join(d, "ssh_host_ed25519_key")
	keygen("-q", "-t", "ed25519", "-N", "", "-C", "aml-bench-host", "-f", hostKeyPath)
	pub, err := os.ReadFile(hostKeyPath + ".pub")
	if err != nil {
		fatal("%v", err)
	}
	hk, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		fatal("parsing the generated host key: %v", err)
	}
	clientKeyPath := filepath.Join(d, "client_key")
	keygen("-q", "-t", "ed25519", "-N", "", "-C", "aml-bench-client", "-f", clientKeyPath)
	keyPEM, err := os.ReadFile(clientKeyPath)
	if err != nil {
		fatal("%v", err)
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		fatal("parsing the generated client key: %v", err)
	}
	clientPub, err := os.ReadFile(clientKeyPath + ".pub")
	if err != nil {
		fatal("%v", err)
	}
	authKeys := filepath.Join(d, "authorized_keys")
	if err := os.WriteFile(authKeys, clientPub, 0o644); err != nil {
		fatal("%v", err)
	}

	out := info{Home: filepath.Join(d, "home"), KeyPath: clientKeyPath,
		HostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hk)))}
	if err := os.Mkdir(out.Home, 0o755); err != nil {
		fatal("%v", err)
	}
	permitRoot := "no"
	if name, uid, err := createUser(out.Home); err == nil {
		out.User = name
		cleanups = append(cleanups, func() { deleteUser(name, uid) })
	} else {
		cur, cerr := user.Current()
		if cerr != nil {
			fatal("creating a user failed (%v) and the current user is unknown: %v", err, cerr)
		}
		out.User = cur.Username
		permitRoot = "prohibit-password"
		out.Note = fmt.Sprintf("creating a user failed (%v); logging in as the current user %s", err, cur.Username)
		// Processes the bench left as this user: only those whose command line names the dir.
		cleanups = append(cleanups, func() { killMentioning(d) })
	}
	if u, err := user.Lookup(out.User); err == nil {
		if g, err := user.LookupGroupId(u.Gid); err == nil {
			out.Group = g.Name
		} else {
			out.Group = u.Gid
		}
	}

	logPath := filepath.Join(d, "sshd.log")
	cfgPath := filepath.Join(d, "sshd_config")
	cfg := strings.Join([]string{
		"ListenAddress 127.0.0.1",
		"Port %d",
		"HostKey " + hostKeyPath,
		"AuthorizedKeysFile " + authKeys,
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PubkeyAuthentication yes",
		"UsePAM no",
		"StrictModes no",
		"PermitRootLogin " + permitRoot,
		"AllowUsers " + out.User,
		"PidFile " + filepath.Join(d, "sshd.pid"),
		"Subsystem sftp internal-sftp",
		"LogLevel INFO",
		"UseDNS no",
		"PrintMotd no",
		"PrintLastLog no",
		"MaxStartups 50:30:100",
		"MaxSessions 50",
	}, "\n") + "\n"

	var cmd *exec.Cmd
	var exited chan struct{}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			fatal("%v", err)
		}
		if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(cfg, port)), 0o644); err != nil {
			fatal("%v", err)
		}
		out.Port = port
		cmd, exited, lastErr = launch(sshdPath, cfgPath, logPath, out.User, signer, port)
		if lastErr == nil {
			break
		}
		if !strings.Contains(logTail(logPath), "Address already in use") {
			break
		}
	}
	if lastErr != nil {
		fatal("%v\n--- %s (tail) ---\n%s", lastErr, logPath, logTail(logPath))
	}
	out.SSHDPID = cmd.Process.Pid
	// Registered after the user's removal, so it runs before it.
	cleanups = append(cleanups, func() { stop(cmd, exited) })

	b, _ := json.Marshal(out)
	fmt.Println(string(b))

	select {
	case <-sigs:
	case <-exited:
		fmt.Fprintf(os.Stderr, "sshbench/sshd: sshd exited unexpectedly\n%s\n", logTail(logPath))
		runCleanups()
		os.Exit(1)
	}
	runCleanups()
}

// launch starts sshd in the foreground of a child and waits until a login succeeds.
func launch(sshdPath, cfgPath, logPath, userName string, signer ssh.Signer, port int) (*exec.Cmd, chan struct{}, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	defer logf.Close()
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If this helper dies, the kernel stops the daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting %s: %w", sshdPath, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return nil, nil, fmt.Errorf("sshd exited at start-up: %v", cmd.ProcessState)
		default:
		}
		c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
			User: userName, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 2 * time.Second,
		})
		if err == nil {
			_ = c.Close()
			return cmd, exited, nil
		}
		if time.Now().After(deadline) {
			stop(cmd, exited)
			return nil, nil, fmt.Errorf("sshd on %s not ready after 10s: %v", addr, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// stop stops the daemon by PID (SIGTERM, SIGKILL after 5 s), then its connection processes.
func stop(cmd *exec.Cmd, exited chan struct{}) {
	left := descendants(cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	for _, p := range left {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

func keygen(args ...string) {
	if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
		fatal("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
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

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// createUser adds a user with home (owned by it) and a random password, which is never used:
// sshd without PAM refuses even key logins to a locked ("!") account.
func createUser(home string) (name, uid string, err error) {
	if _, err := exec.LookPath("useradd"); err != nil {
		return "", "", errors.New("useradd not found")
	}
	name = "amlb" + randomHex(4)
	var out []byte
	for attempt := 0; attempt < 10; attempt++ {
		out, err = exec.Command("useradd", "-M", "-d", home, "-s", "/bin/sh",
			"-c", commentPrefix+strconv.Itoa(os.Getpid()), name).CombinedOutput()
		if err == nil || !bytes.Contains(out, []byte("lock")) {
			break
		}
		time.Sleep(100 * time.Millisecond) // another process holds the passwd lock
	}
	if err != nil {
		return "", "", fmt.Errorf("useradd: %v: %s", err, bytes.TrimSpace(out))
	}
	cp := exec.Command("chpasswd")
	cp.Stdin = strings.NewReader(name + ":Pw-" + randomHex(12) + "\n")
	if out, err := cp.CombinedOutput(); err != nil {
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

func deleteUser(name, uid string) {
	killUID(uid)
	var out []byte
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		if out, err = exec.Command("userdel", name).CombinedOutput(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
		killUID(uid)
	}
	fmt.Fprintf(os.Stderr, "sshbench/sshd: userdel %s: %v: %s\n", name, err, bytes.TrimSpace(out))
}

// removeStaleUsers deletes users left by a bench helper that was killed.
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
		if len(fields) < 5 || !strings.HasPrefix(fields[0], "amlb") || !strings.HasPrefix(fields[4], commentPrefix) {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimPrefix(fields[4], commentPrefix))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			list = append(list, stale{fields[0], fields[2]})
		}
	}
	f.Close()
	for _, s := range list {
		killUID(s.uid)
		_ = exec.Command("userdel", s.name).Run()
	}
}

// pids lists the numeric entries of /proc.
func pids() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// killUID SIGKILLs, by PID, every process whose real uid is uid (never uid 0).
func killUID(uid string) {
	if uid == "" || uid == "0" {
		return
	}
	for _, pid := range pids() {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" {
				if f[1] == uid {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				break
			}
		}
	}
}

// killMentioning SIGKILLs, by PID, every other process whose command line contains dir.
func killMentioning(dir string) {
	self := os.Getpid()
	for _, pid := range pids() {
		if pid == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err == nil && bytes.Contains(b, []byte(dir+"/")) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// descendants lists every process below root.
func descendants(root int) []int {
	children := map[int][]int{}
	for _, pid := range pids() {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

func logTail(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}
