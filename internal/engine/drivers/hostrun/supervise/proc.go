package supervise

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// procStart returns a process's start time in clock ticks since boot (field 22 of
// /proc/<pid>/stat) and whether it is a zombie. Pairing a pid with its start time
// guards against pid reuse.
func ProcStart(pid int) (ticks uint64, zombie bool, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false, err
	}
	// The command name may contain spaces and parentheses: split after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is state (field 3); starttime is field 22 => fields[19].
	if len(fields) < 20 {
		return 0, false, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	ticks, err = strconv.ParseUint(string(fields[19]), 10, 64)
	return ticks, string(fields[0]) == "Z" || string(fields[0]) == "X", err
}

// processAlive reports whether pid still names the process that started at ticks.
func ProcessAlive(pid int, ticks uint64) bool {
	if pid <= 0 {
		return false
	}
	got, zombie, err := ProcStart(pid)
	if err != nil {
		// No /proc (not Linux): fall back to a signal-0 probe.
		if os.IsNotExist(err) {
			return false
		}
		return syscall.Kill(pid, 0) == nil
	}
	return !zombie && (ticks == 0 || got == ticks)
}

// SelfStartTicks returns this process's start time in ticks (0 if unknown).
func SelfStartTicks() uint64 {
	t, _, _ := ProcStart(os.Getpid())
	return t
}

// killGroup signals a whole process group; a missing group is not an error.
func KillGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 1 {
		return nil
	}
	err := syscall.Kill(-pgid, sig)
	if err == syscall.ESRCH {
		return nil
	}
	return err
}

// groupAlive reports whether any process remains in the group.
func GroupAlive(pgid int) bool {
	return pgid > 1 && syscall.Kill(-pgid, 0) == nil
}
