package engine

import "time"

// SetProgressIntervals shortens WaitRunProgress's intervals for a test.
func SetProgressIntervals(status, logLine time.Duration) (restore func()) {
	ps, pl := progressEvery, logLineEvery
	progressEvery, logLineEvery = status, logLine
	return func() { progressEvery, logLineEvery = ps, pl }
}
