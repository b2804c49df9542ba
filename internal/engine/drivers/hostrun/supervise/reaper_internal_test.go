package supervise

import (
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// The kernel's children lists and the /proc scan find the same tree: a shell
// and its two background children, below this process.
func TestDescendantsFromChildrenLists(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "sleep 30 & sleep 30 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range scanDescendants(os.Getpid()) {
			_ = syscallKill(p)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	self := os.Getpid()
	var scan []int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if scan = scanDescendants(self); len(scan) >= 3 {
			break
		}
	}
	if len(scan) < 3 {
		t.Fatalf("the /proc scan found %v below this process, want the shell and two sleeps", scan)
	}
	tree, ok := childTree(self)
	if !ok {
		t.Skip("this kernel keeps no /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN): descendants uses the scan")
	}
	slices.Sort(scan)
	slices.Sort(tree)
	if !slices.Equal(scan, tree) {
		t.Errorf("children lists found %v, the scan %v", tree, scan)
	}
	if !slices.Contains(tree, cmd.Process.Pid) {
		t.Errorf("tree %v lacks the shell %d", tree, cmd.Process.Pid)
	}
}

func syscallKill(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}
