// Package postgres starts a real PostgreSQL server for tests: Debian's
// postgresql (scripts/install-postgres.sh), a new cluster made by initdb in a
// temporary directory, listening on a loopback port chosen at run time, with
// password authentication. As root the server runs as the postgres user
// (PostgreSQL refuses to run as root). It is stopped by its PID when the test
// ends.
package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// Server is a running PostgreSQL cluster.
type Server struct {
	Bin      string // directory of initdb, pg_ctl, postgres
	Data     string // the cluster's data directory
	Port     int
	User     string // superuser
	Password string
	Log      string // server log

	cred *syscall.Credential // who runs the server (nil: ourselves)
	t    testing.TB
	pid  int
}

// FindBin returns the directory holding initdb and pg_ctl, or "" (the newest
// of /usr/lib/postgresql/*/bin, then PATH).
func FindBin() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) && isExec(filepath.Join(d, "postgres")) {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			d := filepath.Dir(real)
			if isExec(filepath.Join(d, "pg_ctl")) && isExec(filepath.Join(d, "postgres")) {
				return d
			}
		}
	}
	return ""
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// Start makes a new cluster and starts it, or skips the test saying how to get
// PostgreSQL. The server stops when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := FindBin()
	if bin == "" {
		t.Skip("no PostgreSQL server (initdb, pg_ctl, postgres) in /usr/lib/postgresql/*/bin or on PATH (run scripts/install-postgres.sh)")
	}
	s := &Server{Bin: bin, User: "aml", Password: randomHex(12), t: t}
	// As root, the cluster belongs to the postgres user: its directory must
	// be reachable by it, so it is not under t.TempDir (mode 0700, root's).
	base, err := os.MkdirTemp("", "aml-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("running as root and there is no postgres user to run the server as (scripts/install-postgres.sh creates it)")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chmod(base, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(base, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	s.Data = filepath.Join(base, "data")
	s.Log = filepath.Join(base, "server.log")
	pwfile := filepath.Join(base, "pw")
	if err := os.WriteFile(pwfile, []byte(s.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.chown(pwfile)
	out, err := s.command("initdb", "-D", s.Data, "-U", s.User, "--pwfile", pwfile, "--auth=scram-sha-256",
		"--encoding=UTF8", "--locale=C.UTF-8", "--no-sync").CombinedOutput()
	os.Remove(pwfile)
	if err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if lastErr = s.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatal(lastErr)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

func (s *Server) chown(p string) {
	if s.cred != nil {
		_ = os.Chown(p, int(s.cred.Uid), int(s.cred.Gid))
	}
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.Bin, name), args...)
	cmd.Dir = filepath.Dir(s.Data)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start launches the server (on a new port unless it ran before) and waits
// until it accepts connections.
func (s *Server) start() error {
	if s.Port == 0 {
		p, err := freePort()
		if err != nil {
			return err
		}
		s.Port = p
	}
	sock := filepath.Join(filepath.Dir(s.Data), "sock")
	if err := os.MkdirAll(sock, 0o755); err != nil {
		return err
	}
	s.chown(sock)
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100", s.Port, sock)
	out, err := s.command("pg_ctl", "-D", s.Data, "-l", s.Log, "-o", opts, "-w", "-t", "60", "start").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(s.Log)
		port := s.Port
		s.Port = 0 // the port may have been taken meanwhile: another next time
		return fmt.Errorf("pg_ctl start on 127.0.0.1:%d: %v\n%s\n%s", port, err, out, log)
	}
	b, err := os.ReadFile(filepath.Join(s.Data, "postmaster.pid"))
	if err != nil {
		return err
	}
	s.pid, _ = strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if s.pid <= 0 {
		return fmt.Errorf("postmaster.pid holds no pid: %q", b)
	}
	return nil
}

// Stop shuts the server down (fast shutdown: SIGINT to the postmaster by its
// PID, SIGQUIT after 20 s, then SIGKILL). Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.pid <= 0 {
		return
	}
	pid := s.pid
	s.pid = 0
	_ = syscall.Kill(pid, syscall.SIGINT)
	for _, sig := range []syscall.Signal{syscall.SIGQUIT, syscall.SIGKILL} {
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if syscall.Kill(pid, 0) != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = syscall.Kill(pid, sig)
	}
}

// Restart starts a stopped server again on the same port and data.
func (s *Server) Restart() {
	s.t.Helper()
	if s.pid > 0 {
		return
	}
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// URL is the connection string of a database, with the password.
func (s *Server) URL(db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(s.User, s.Password), Host: fmt.Sprintf("127.0.0.1:%d", s.Port), Path: "/" + db}
	u.RawQuery = "sslmode=disable"
	return u.String()
}

// CreateDB makes a new database and returns its connection string.
func (s *Server) CreateDB(t testing.TB, name string) string {
	t.Helper()
	db, err := sql.Open("pgx", s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, `CREATE DATABASE "`+name+`"`); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	return s.URL(name)
}

// NewDB makes a database with a fresh name.
func (s *Server) NewDB(t testing.TB) string {
	return s.CreateDB(t, "t_"+randomHex(6))
}

// Running reports whether the postmaster is alive.
func (s *Server) Running() bool {
	return s.pid > 0 && !errors.Is(syscall.Kill(s.pid, 0), syscall.ESRCH)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
