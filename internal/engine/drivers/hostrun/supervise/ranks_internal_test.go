package supervise

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// A requeue that comes after the run was claimed again (the new attempt's
// supervisor has written its status) leaves that attempt alone: its script
// is not killed and its status not overwritten.
func TestResetForRequeueLeavesANewerAttemptAlone(t *testing.T) {
	dir := t.TempDir()
	l := Layout{Dir: dir}
	if err := os.MkdirAll(l.Control(), 0o755); err != nil {
		t.Fatal(err)
	}
	script := exec.Command("sleep", "30")
	script.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own group, as a script
	if err := script.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = script.Wait(); close(exited) }()
	t.Cleanup(func() { _ = script.Process.Kill(); <-exited })
	// This test process plays the new attempt's supervisor.
	newer := SupervisorStatus{State: run.State{Status: run.Running}, SupervisorPID: os.Getpid(), SupervisorTicks: SelfStartTicks(), ChildPID: script.Process.Pid}
	if err := WriteJSONAtomic(l.Status(), newer); err != nil {
		t.Fatal(err)
	}
	if err := ResetForRequeue(dir, "a node of this run was lost; the run is queued again (once)"); err != nil {
		t.Fatal(err)
	}
	if st, err := ReadState(dir); err != nil || st.Status != run.Running {
		t.Fatalf("status after the late requeue: %+v, %v; want the newer attempt's Running", st, err)
	}
	select {
	case <-exited:
		t.Fatal("the newer attempt's script was killed")
	case <-time.After(100 * time.Millisecond):
	}
	// Once no supervisor is alive (its pid is ours, its start time is not), the
	// directory is reset.
	newer.SupervisorTicks++
	if err := WriteJSONAtomic(l.Status(), newer); err != nil {
		t.Fatal(err)
	}
	if err := ResetForRequeue(dir, "queued again"); err != nil {
		t.Fatal(err)
	}
	if st, err := ReadState(dir); err != nil || st.Status != run.Queued {
		t.Fatalf("status after the requeue: %+v, %v; want Queued", st, err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the lost attempt's script was not killed")
	}
}
