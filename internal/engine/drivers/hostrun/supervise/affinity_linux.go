package supervise

import "golang.org/x/sys/unix"

// setAffinity pins this process (and so the script it starts) to cpus.
func setAffinity(cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	return unix.SchedSetaffinity(0, &set)
}
