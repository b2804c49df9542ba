// Package spark finds the real Spark that scripts/install-spark.sh installs
// (the pyspark package, which carries spark-submit, spark-class and the jars)
// and starts a standalone master and worker on loopback ports for tests.
package spark

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Install is a Spark installation.
type Install struct {
	Venv   string // the virtual environment holding pyspark
	Python string // its interpreter (what PYSPARK_PYTHON points at)
	Home   string // SPARK_HOME: bin/spark-submit, bin/spark-class, jars/
}

// Find returns the installation, or skips the test saying how to get one.
func Find(t testing.TB) Install {
	t.Helper()
	venv := os.Getenv("AML_SPARK_VENV")
	if venv == "" {
		venv = "/opt/aml-spark"
	}
	matches, _ := filepath.Glob(filepath.Join(venv, "lib", "python3*", "site-packages", "pyspark", "bin", "spark-submit"))
	if len(matches) == 0 {
		t.Skipf("no Spark in %s (run scripts/install-spark.sh)", venv)
	}
	if _, err := exec.LookPath("java"); err != nil {
		t.Skip("no java on PATH (scripts/install-spark.sh installs one)")
	}
	return Install{Venv: venv, Python: filepath.Join(venv, "bin", "python"), Home: filepath.Dir(filepath.Dir(matches[0]))}
}

// Env is what every Spark process of a test needs: loopback only.
func Env() []string {
	return append(os.Environ(), "SPARK_LOCAL_IP=127.0.0.1", "SPARK_LOCAL_HOSTNAME=localhost")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start launches a Spark daemon in its own process group, logging to a file,
// and stops the group when the test ends.
func start(t testing.TB, in Install, logPath string, args ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(in.Home, "bin", "spark-class"), args...)
	cmd.Env = append(Env(), "SPARK_HOME="+in.Home, "SPARK_NO_DAEMONIZE=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logf.Close()
	})
	return cmd
}

// waitLog waits until the daemon's log has a line containing want.
func waitLog(t testing.TB, path, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if f, err := os.Open(path); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if strings.Contains(sc.Text(), want) {
					f.Close()
					return
				}
			}
			f.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("timed out after %s waiting for %q in %s:\n%s", limit, want, path, b)
}

// Standalone starts a standalone master and one worker (1 core, 1 GiB) on
// loopback ports chosen now, and returns the master URL (spark://127.0.0.1:P).
// Both stop when the test ends.
func Standalone(t testing.TB, in Install) string {
	t.Helper()
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	ui, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	master := fmt.Sprintf("spark://127.0.0.1:%d", port)
	mlog := filepath.Join(dir, "master.log")
	start(t, in, mlog, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", fmt.Sprint(port), "--webui-port", fmt.Sprint(ui))
	waitLog(t, mlog, "I have been elected leader", 60*time.Second)
	wui, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o777); err != nil {
		t.Fatal(err)
	}
	wlog := filepath.Join(dir, "worker.log")
	start(t, in, wlog, "org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1", "--webui-port", fmt.Sprint(wui),
		"--cores", "1", "--memory", "1g", "--work-dir", work)
	waitLog(t, wlog, "Successfully registered with master", 60*time.Second)
	return master
}
