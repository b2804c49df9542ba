// Package slurm starts a real Slurm on localhost for tests: munged, slurmctld
// and two slurmd nodes (n1, n2, one CPU each) from Debian's slurm-wlm and munge,
// all private to the test (their own key, socket, spool, state and ports chosen
// at run time), accounting off.
package slurm

import (
	"crypto/rand"
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

// Cluster is a running test cluster.
type Cluster struct {
	Dir  string
	Conf string // SLURM_CONF for clients
	t    testing.TB
	// daemons by name (munged, slurmctld, n1, n2), to stop or restart one.
	procs map[string]*exec.Cmd
	args  map[string][]string
}

// Check says why no cluster can be started here ("" when one can).
func Check() string {
	for _, bin := range []string{"munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel"} {
		if _, err := exec.LookPath(bin); err != nil {
			if _, err := os.Stat("/usr/sbin/" + bin); err != nil {
				return "Slurm is not installed (" + bin + " not found; run scripts/install-slurm.sh)"
			}
		}
	}
	if os.Geteuid() != 0 {
		return "slurmd must run as root to start jobs as their users"
	}
	return ""
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func bin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return "/usr/sbin/" + name
}

// Start starts the cluster (or skips the test saying why) and stops it when
// the test ends. Its directory is traversable by every user, so jobs of the
// test sshd's user run too.
func Start(t testing.TB) *Cluster {
	t.Helper()
	if why := Check(); why != "" {
		t.Skip(why)
	}
	dir, err := os.MkdirTemp("", "aml-slurm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"state", "spool-n1", "spool-n2", "munge"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "munge"), 0o755); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 1024)
	_, _ = rand.Read(key)
	if err := os.WriteFile(filepath.Join(dir, "munge", "munge.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Dir: dir, Conf: filepath.Join(dir, "slurm.conf"), t: t, procs: map[string]*exec.Cmd{}, args: map[string][]string{}}
	ctl, p1, p2 := freePort(), freePort(), freePort()
	sock := filepath.Join(dir, "munge", "munge.socket")
	conf := fmt.Sprintf(`ClusterName=amltest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=%d
AuthType=auth/munge
AuthInfo=socket=%[2]s
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=%[3]s/state
SlurmdSpoolDir=%[3]s/spool-%%n
SlurmctldPidFile=%[3]s/slurmctld.pid
SlurmdPidFile=%[3]s/slurmd-%%n.pid
SlurmctldLogFile=%[3]s/slurmctld.log
SlurmdLogFile=%[3]s/slurmd-%%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=10
SlurmdTimeout=5
MessageTimeout=5
InactiveLimit=0
KillWait=3
MinJobAge=600
NodeName=n1 NodeAddr=127.0.0.1 Port=%[4]d CPUs=1 RealMemory=1000 State=UNKNOWN
NodeName=n2 NodeAddr=127.0.0.1 Port=%[5]d CPUs=1 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
PartitionName=single Nodes=n1 MaxTime=60 State=UP
`, ctl, sock, dir, p1, p2)
	if err := os.WriteFile(c.Conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	c.args["munged"] = []string{bin("munged"), "-F", "-f", "--key-file=" + filepath.Join(dir, "munge", "munge.key"), "--socket=" + sock,
		"--pid-file=" + filepath.Join(dir, "munge", "munged.pid"), "--log-file=" + filepath.Join(dir, "munge", "munged.log"), "--seed-file=" + filepath.Join(dir, "munge", "seed")}
	c.args["slurmctld"] = []string{bin("slurmctld"), "-D", "-f", c.Conf}
	c.args["n1"] = []string{bin("slurmd"), "-D", "-N", "n1", "-f", c.Conf}
	c.args["n2"] = []string{bin("slurmd"), "-D", "-N", "n2", "-f", c.Conf}
	t.Cleanup(c.stopAll)
	c.Start("munged")
	c.waitFor(func() bool { _, err := os.Stat(sock); return err == nil }, "munged's socket")
	c.Start("slurmctld")
	c.Start("n1")
	c.Start("n2")
	c.WaitIdle(2)
	return c
}

// Env is the environment of Slurm clients of this cluster.
func (c *Cluster) Env() []string { return append(os.Environ(), "SLURM_CONF="+c.Conf) }

// Start starts (or restarts) one daemon: "munged", "slurmctld", "n1" or "n2".
func (c *Cluster) Start(name string) {
	c.t.Helper()
	a := c.args[name]
	logf, err := os.OpenFile(filepath.Join(c.Dir, name+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(a[0], a[1:]...)
	cmd.Env = c.Env()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	logf.Close()
	c.procs[name] = cmd
	go func() { _ = cmd.Wait() }()
}

// Kill stops one daemon at once (SIGKILL to its process group), as a crash.
func (c *Cluster) Kill(name string) {
	if cmd := c.procs[name]; cmd != nil && cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		delete(c.procs, name)
	}
}

func (c *Cluster) stopAll() {
	for _, name := range []string{"n1", "n2", "slurmctld", "munged"} {
		if cmd := c.procs[name]; cmd != nil && cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	time.Sleep(500 * time.Millisecond)
	for name := range c.procs {
		c.Kill(name)
	}
}

// Run runs a Slurm client command against the cluster.
func (c *Cluster) Run(args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = c.Env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *Cluster) waitFor(cond func() bool, what string) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(c.Dir, "slurmctld.log"))
			c.t.Fatalf("timed out waiting for %s; slurmctld.log:\n%s", what, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// WaitIdle waits until n nodes are idle.
func (c *Cluster) WaitIdle(n int) {
	c.t.Helper()
	c.waitFor(func() bool {
		out, err := c.Run("sinfo", "-h", "-N", "-o", "%N %t")
		return err == nil && strings.Count(out, " idle") >= n
	}, fmt.Sprintf("%d idle Slurm nodes", n))
}
