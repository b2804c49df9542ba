package supervise

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// becomeSubreaper makes this process the parent of every orphan among its
// descendants: a script's child that leaves the script's process group (setsid,
// a double fork) is still ours, and stops with the run.
func becomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// killDescendants stops every process below this one and reaps it. It runs once
// the script has been waited for, so no exit status that os/exec waits on is
// taken from it. Bounded: a fork bomb cannot keep it going.
//
// A process with no child has no descendant, so the common end of a run (a
// script that left nothing behind) costs one wait4 and no /proc lookup. That
// matters beyond the lookup itself: every dentry made under our own
// /proc/<pid> (the children lists of our threads) is invalidated when our
// parent reaps us, which cost the provider about 3 ms of kernel time per run
// under a sweep's load (perf: release_task → d_invalidate in its waitid).
func killDescendants() int {
	self := os.Getpid()
	killed := 0
	for round := 0; round < 50; round++ {
		if !reapChildren() {
			return killed
		}
		pids := descendants(self)
		for _, pid := range pids {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed++
			}
		}
		if len(pids) == 0 {
			reapChildren()
			return killed
		}
		time.Sleep(20 * time.Millisecond)
	}
	reapChildren()
	return killed
}

// reapChildren collects every child that has exited, and reports whether any
// child is left (one still running, or one no wait could collect). Children of
// any exit signal count (__WALL): an orphan reparented to us is ours whatever
// signal it was cloned with.
func reapChildren() (left bool) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err != unix.ECHILD
		case pid == 0:
			return true // children, none of them exited
		}
	}
}

// descendants lists the live processes whose ancestry leads to root: from the
// kernel's children lists when it keeps them (CONFIG_PROC_CHILDREN: a few
// reads, for a supervisor whose script left nothing behind), else from a scan
// of every process's /proc/<pid>/stat (several milliseconds on a busy machine,
// at the end of every run).
func descendants(root int) []int {
	treeWalks.Add(1)
	if out, ok := childTree(root); ok {
		return out
	}
	return scanDescendants(root)
}

// treeWalks counts descendants calls (a test asserts that a clean end makes none).
var treeWalks atomic.Int64

// maxTree bounds the walk (a fork bomb's tree is killed over several rounds).
const maxTree = 1 << 16

// childTree walks /proc/<pid>/task/<tid>/children from root down; ok is false
// when the kernel has no such files. A process that exits while it is read is
// skipped: its children are then reparented, to the subreaper or to init.
func childTree(root int) (out []int, ok bool) {
	rootTasks, err := os.ReadDir("/proc/" + strconv.Itoa(root) + "/task")
	if err != nil || len(rootTasks) == 0 {
		return nil, false
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(root) + "/task/" + rootTasks[0].Name() + "/children"); err != nil {
		return nil, false
	}
	seen := map[int]bool{root: true}
	queue := []int{root}
	for len(queue) > 0 && len(seen) < maxTree {
		pid := queue[0]
		queue = queue[1:]
		dir := "/proc/" + strconv.Itoa(pid) + "/task"
		tasks, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, t := range tasks {
			b, err := os.ReadFile(dir + "/" + t.Name() + "/children")
			if err != nil {
				continue
			}
			for _, f := range bytes.Fields(b) {
				c, err := strconv.Atoi(string(f))
				if err != nil || seen[c] {
					continue
				}
				seen[c] = true
				queue = append(queue, c)
				if live(c) {
					out = append(out, c)
				}
			}
		}
	}
	return out, true
}

// live reports whether pid exists and is neither a zombie nor dead.
func live(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	state := b[i+2]
	return state != 'Z' && state != 'X'
}

// scanDescendants is descendants from every process's parent in /proc.
func scanDescendants(root int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 2 || f[0][0] == 'Z' || f[0][0] == 'X' {
			continue
		}
		if ppid, err := strconv.Atoi(string(f[1])); err == nil {
			parent[pid] = ppid
		}
	}
	var out []int
	for pid := range parent {
		for p, n := parent[pid], 0; p > 1 && n < 64; p, n = parent[p], n+1 {
			if p == root {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// StopTree SIGKILLs the process pid, if it is still the one that started at
// ticks (0: any), and every process below it, then waits up to limit until
// none of them can run any more (gone, or a zombie). It reports whether they
// are all stopped. A process whose main thread has exited shows as a zombie
// while its other threads still run, and a child's parent-death signal comes
// only when the thread that started it exits: so a node agent that looks dead
// may still have a rank supervisor that writes, until this has run.
func StopTree(pid int, ticks uint64, limit time.Duration) bool {
	if pid <= 1 {
		return true
	}
	got, _, err := ProcStart(pid)
	if err != nil || (ticks != 0 && got != ticks) {
		return true // gone (or the pid is another process's now)
	}
	type proc struct {
		pid   int
		ticks uint64
	}
	procs := []proc{{pid, got}}
	for _, d := range descendants(pid) {
		if t, _, err := ProcStart(d); err == nil {
			procs = append(procs, proc{d, t})
		}
	}
	for _, p := range procs {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(limit)
	for {
		alive := false
		for _, p := range procs {
			if ProcessAlive(p.pid, p.ticks) {
				alive = true
				break
			}
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}
