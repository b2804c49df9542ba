package engine

import "time"

// SetProgressIntervals shortens WaitRunProgress's intervals for a test.
func SetProgressIntervals(status, logLine time.Duration) (restore func()) {
	ps, pl := progressEvery, logLineEvery
	progressEvery, logLineEvery = status, logLine
	return func() { progressEvery, logLineEvery = ps, pl }
}

// SetSubmitHook calls f with the source directory of each validated
// submission, before its snapshot is stored or sent.
func SetSubmitHook(f func(srcDir string)) (restore func()) {
	old := testHookSubmit
	testHookSubmit = f
	return func() { testHookSubmit = old }
}
