// Package docker starts a private Docker engine for tests: Debian's dockerd (with
// its containerd and runc) on a socket, data root, exec root and pidfile of its
// own, with --bridge=none --iptables=false --ip-masq=false (no NAT, no private
// address ranges, nothing of the host's network changed), and a base image made
// here, since no registry is reachable: a Debian minbase root filesystem with
// python3 from debootstrap, imported with `docker import`. The root filesystem
// is cached as a tarball between test runs (keyed by BaseVersion), so only the
// first run on a machine debootstraps.
//
// One engine serves every test of a package (Shared); the package's TestMain
// stops it (Stop). Nothing is ever pulled.
package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BaseVersion keys the cached base image; change it when the recipe changes.
const BaseVersion = "bookworm-py3-1"

// BaseImage is the tag of the test base image in the private engine.
const BaseImage = "aml-test-base:" + BaseVersion

// Engine is a running private dockerd.
type Engine struct {
	Dir  string // socket, data root, exec root, pidfile, log
	Host string // the DOCKER_HOST value: unix://<Dir>/docker.sock
	// BaseImage is a local image with python3 (and its venv module) that
	// tests run and build from.
	BaseImage string
	cmd       *exec.Cmd
}

// Check says why no engine can be started here ("" when one can).
func Check() string {
	for _, b := range []string{"dockerd", "containerd", "runc", "docker", "debootstrap"} {
		if bin(b) == "" {
			return "Docker is not installed (" + b + " not found; run scripts/install-docker.sh)"
		}
	}
	if os.Geteuid() != 0 {
		return "a private dockerd needs root"
	}
	return ""
}

func bin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
		if p := filepath.Join(d, name); isExec(p) {
			return p
		}
	}
	return ""
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

var (
	sharedMu  sync.Mutex
	shared    *Engine
	sharedErr error
)

// Shared returns the package's one engine, starting it on first use, or skips
// the test saying why there is none. The environment's DOCKER_HOST is set to it
// (the engine under test and its agents honour DOCKER_HOST). Call Stop from
// TestMain.
func Shared(t testing.TB) *Engine {
	t.Helper()
	if why := Check(); why != "" {
		t.Skip(why)
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = start()
		if sharedErr == nil {
			os.Setenv("DOCKER_HOST", shared.Host)
		}
	}
	if sharedErr != nil {
		t.Fatalf("starting the private Docker engine: %v", sharedErr)
	}
	return shared
}

// Stop stops the shared engine if one was started (for TestMain).
func Stop() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.stop()
		shared = nil
	}
}

// StartEngine starts a private engine for a program (the bench), without a
// testing.TB; the caller stops it with Stop.
func StartEngine() (*Engine, error) {
	if why := Check(); why != "" {
		return nil, errors.New(why)
	}
	return start()
}

// Stop stops an engine started with StartEngine and removes its directory.
func (e *Engine) Stop() { e.stop() }

func start() (*Engine, error) {
	dir, err := os.MkdirTemp("", "aml-docker-")
	if err != nil {
		return nil, err
	}
	// Traversable, so the test sshd's user reaches the socket.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	e := &Engine{Dir: dir, Host: "unix://" + filepath.Join(dir, "docker.sock")}
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	e.cmd = exec.Command(bin("dockerd"),
		"--bridge=none", "--iptables=false", "--ip-masq=false", "--ip6tables=false",
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"-H", e.Host)
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	// Its own group (stopped by pid, with its containerd), and stopped if the
	// test binary dies without its TestMain cleanup.
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := e.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if out, err := e.Docker(context.Background(), "version", "--format", "{{.Server.Version}}"); err == nil {
			_ = out
			break
		}
		if time.Now().After(deadline) || e.cmd.ProcessState != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "dockerd.log"))
			e.stop()
			return nil, fmt.Errorf("dockerd did not answer on %s within 60 s:\n%s", e.Host, tail(string(log), 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The daemon is root's and private to this test process; users the tests
	// create (the test sshd's) use it too.
	_ = os.Chmod(filepath.Join(dir, "docker.sock"), 0o666)
	tarball, err := baseRootfs()
	if err != nil {
		e.stop()
		return nil, err
	}
	if out, err := e.Docker(context.Background(), "import", tarball, BaseImage); err != nil {
		e.stop()
		return nil, fmt.Errorf("docker import %s: %v: %s", tarball, err, out)
	}
	e.BaseImage = BaseImage
	return e, nil
}

// Docker runs the docker CLI against this engine and returns its combined output.
func (e *Engine) Docker(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("docker"), args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+e.Host)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Containers lists the ids of containers (running or not) with label k=v.
func (e *Engine) Containers(t testing.TB, label string, all bool) []string {
	t.Helper()
	args := []string{"ps", "-q", "--no-trunc", "--filter", "label=" + label}
	if all {
		args = append(args, "-a")
	}
	out, err := e.Docker(context.Background(), args...)
	if err != nil {
		t.Fatalf("docker ps: %v: %s", err, out)
	}
	return strings.Fields(out)
}

// ImageExists reports whether ref names an image in this engine.
func (e *Engine) ImageExists(ref string) bool {
	_, err := e.Docker(context.Background(), "image", "inspect", "--format", "{{.Id}}", ref)
	return err == nil
}

// Images lists repository:tag of the images whose repository is repo.
func (e *Engine) Images(t testing.TB, repo string) []string {
	t.Helper()
	out, err := e.Docker(context.Background(), "images", "--format", "{{.Repository}}:{{.Tag}}", repo)
	if err != nil {
		t.Fatalf("docker images: %v: %s", err, out)
	}
	return strings.Fields(out)
}

func (e *Engine) stop() {
	if e.cmd == nil || e.cmd.Process == nil {
		return
	}
	// Containers first (a test that failed may have left one), then the
	// daemon, which stops its containerd.
	if ids, err := e.Docker(context.Background(), "ps", "-aq"); err == nil && ids != "" {
		_, _ = e.Docker(context.Background(), append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = e.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = e.cmd.Process.Kill()
		<-done
	}
	// The daemon leaves its default network namespace mounted under the exec
	// root; unmount whatever is left below our directory, deepest first.
	unmountBelow(e.Dir)
	_ = os.RemoveAll(e.Dir)
}

func unmountBelow(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

// baseRootfs returns the cached root filesystem tarball, making it first if
// needed (under a lock: test packages start in parallel).
func baseRootfs() (string, error) {
	cache := os.Getenv("AML_TEST_CACHE")
	if cache == "" {
		uc, err := os.UserCacheDir()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(uc, "terraform-provider-aml-test")
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	tarball := filepath.Join(cache, "docker-base-"+BaseVersion+".tar")
	lock, err := os.OpenFile(tarball+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if st, err := os.Stat(tarball); err == nil && st.Size() > 0 {
		return tarball, nil
	}
	root, err := os.MkdirTemp(cache, "rootfs-")
	if err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(root) }()
	mirror := os.Getenv("AML_DEBIAN_MIRROR")
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin("debootstrap"), "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
		"bookworm", root, mirror).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("debootstrap: %v\n%s", err, tail(string(out), 20))
	}
	// A machine behind a TLS-inspecting proxy trusts its CA; so must builds
	// in the image (pip reaching the package index).
	if ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		_ = os.WriteFile(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"), ca, 0o644)
	}
	for _, junk := range []string{"var/cache/apt/archives", "var/lib/apt/lists"} {
		matches, _ := filepath.Glob(filepath.Join(root, junk, "*"))
		for _, m := range matches {
			_ = os.RemoveAll(m)
		}
	}
	tmp := tarball + ".tmp"
	if out, err := exec.CommandContext(ctx, "tar", "-C", root, "--numeric-owner", "-cf", tmp, ".").CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("tar: %v: %s", err, out)
	}
	return tarball, os.Rename(tmp, tarball)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.TrimSpace([]byte(strings.Join(lines, "\n"))))
}
