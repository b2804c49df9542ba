// Package s3 starts a real S3-compatible server for tests: versitygw
// (scripts/install-versitygw.sh) serving a temporary directory on a loopback
// port chosen at run time, with an access key and secret made here. It is
// stopped by its PID when the test ends.
package s3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/store/objstore"
)

// Server is a running versitygw.
type Server struct {
	Bin       string
	Root      string // the directory it serves (one subdirectory per bucket)
	Port      int
	AccessKey string
	SecretKey string
	Region    string
	Log       string

	t      testing.TB
	cmd    *exec.Cmd
	exited chan struct{}
}

// FindBin returns the versitygw binary (AML_VERSITYGW, PATH, then
// $GOBIN / $GOPATH/bin / ~/go/bin), or "".
func FindBin() string {
	if p := os.Getenv("AML_VERSITYGW"); p != "" {
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if gp := os.Getenv("GOPATH"); gp != "" {
		for _, d := range filepath.SplitList(gp) {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		dirs = append(dirs, filepath.Join(strings.TrimSpace(string(out)), "bin"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// Start serves a new directory, or skips the test saying how to get versitygw.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := FindBin()
	if bin == "" {
		t.Skip("no versitygw on PATH or in $(go env GOPATH)/bin (run scripts/install-versitygw.sh)")
	}
	base := t.TempDir()
	s := &Server{Bin: bin, Root: filepath.Join(base, "data"), AccessKey: "AK" + randomHex(8), SecretKey: randomHex(20),
		Region: "us-east-1", Log: filepath.Join(base, "versitygw.log"), t: t}
	if err := os.MkdirAll(s.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = s.start(); err == nil {
			break
		}
		s.Port = 0
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start() error {
	if s.Port == 0 {
		p, err := freePort()
		if err != nil {
			return err
		}
		s.Port = p
	}
	logf, err := os.OpenFile(s.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// The secret goes on the command line as versitygw documents; it is a
	// throwaway made for this test.
	cmd := exec.Command(s.Bin, "--access", s.AccessKey, "--secret", s.SecretKey, "--region", s.Region,
		"--port", fmt.Sprintf("127.0.0.1:%d", s.Port), "posix", s.Root)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			b, _ := os.ReadFile(s.Log)
			return fmt.Errorf("versitygw exited at start on 127.0.0.1:%d:\n%s", s.Port, b)
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond); err == nil {
			c.Close()
			s.cmd = cmd
			s.exited = exited
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-exited
	return fmt.Errorf("versitygw did not listen on %s within 30 s", s.Addr())
}

// Addr is host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.Port) }

// Endpoint is the server's URL.
func (s *Server) Endpoint() string { return "http://" + s.Addr() }

// Stop ends the server (SIGTERM to its process group by PID, SIGKILL after
// 10 s). Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	pid := s.cmd.Process.Pid
	s.cmd = nil
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-s.exited
	}
}

// Restart starts a stopped server again on the same port and directory.
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		return
	}
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// Config is a client configuration of a bucket on this server.
func (s *Server) Config(bucket string) objstore.S3Config {
	return objstore.S3Config{Bucket: bucket, Endpoint: s.Endpoint(), Region: s.Region, AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey}
}

// Bucket makes a new bucket through the S3 API and returns its name.
func (s *Server) Bucket(t testing.TB) string {
	t.Helper()
	name := "b-" + randomHex(6)
	c, err := objstore.NewS3(context.Background(), s.Config(name))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.CreateBucket(ctx); err != nil {
		t.Fatal(err)
	}
	return name
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
