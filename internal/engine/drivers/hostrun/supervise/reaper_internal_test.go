package supervise

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
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

// At a run's end the supervisor looks for what the script left behind only
// when it has a child left: a script that left nothing costs no /proc lookup
// (entries made under our own /proc/<pid> make our parent's reaping of us
// slow), and one whose background process left its group is still found and
// stopped. Run in a child process of the test, which becomes a subreaper as the
// supervisor does.
func TestKillDescendantsLooksOnlyWhenAChildIsLeft(t *testing.T) {
	if os.Getenv("AML_TEST_KILL_DESCENDANTS") == "1" {
		killDescendantsHelper()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillDescendantsLooksOnlyWhenAChildIsLeft$", "-test.count=1")
	cmd.Env = append(os.Environ(), "AML_TEST_KILL_DESCENDANTS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	for _, want := range []string{"clean: walks=0 killed=0\n", "left: walks=1 killed=1 alive=false\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("helper output lacks %q:\n%s", want, out)
		}
	}
}

func killDescendantsHelper() {
	if err := becomeSubreaper(); err != nil {
		fmt.Println("subreaper:", err)
		os.Exit(2)
	}
	// A script that exited and was waited for, leaving nothing.
	_ = exec.Command("/bin/sh", "-c", "true").Run()
	w := treeWalks.Load()
	k := killDescendants()
	fmt.Printf("clean: walks=%d killed=%d\n", treeWalks.Load()-w, k)
	// A script whose background process left its group and outlives it: it is
	// reparented to us.
	b, err := exec.Command("/bin/sh", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!").Output()
	pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || perr != nil {
		fmt.Println("starting the background process:", err, perr)
		os.Exit(2)
	}
	w = treeWalks.Load()
	k = killDescendants()
	fmt.Printf("left: walks=%d killed=%d alive=%v\n", treeWalks.Load()-w, k, live(pid))
	if live(pid) {
		_ = syscallKill(pid)
	}
}
