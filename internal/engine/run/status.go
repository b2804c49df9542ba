// Package run holds the run record, its status machine and the parsing of what a
// run reports back (metrics, outputs, logs).
package run

import (
	"fmt"
	"slices"
)

// Status names follow Azure ML's Run.get_status().
type Status string

const (
	NotStarted      Status = "NotStarted"
	Queued          Status = "Queued"
	Preparing       Status = "Preparing"
	Starting        Status = "Starting"
	Running         Status = "Running"
	Finalizing      Status = "Finalizing"
	Completed       Status = "Completed"
	Failed          Status = "Failed"
	CancelRequested Status = "CancelRequested"
	Canceled        Status = "Canceled"
)

// AllStatuses lists every status in lifecycle order.
var AllStatuses = []Status{NotStarted, Queued, Preparing, Starting, Running, Finalizing, Completed, Failed, CancelRequested, Canceled}

// Failure reasons recorded beside a Failed or Canceled status.
const (
	ReasonNone        = ""
	ReasonSetupFailed = "setup_failed"
	ReasonNonzeroExit = "nonzero_exit"
	ReasonTimedOut    = "timed_out"
	ReasonUnreachable = "unreachable"
	ReasonLost        = "lost"
	ReasonCanceled    = "canceled"
	ReasonKilled      = "killed_by_signal"
)

// Terminal reports whether no further transition is possible.
func (s Status) Terminal() bool {
	return s == Completed || s == Failed || s == Canceled
}

// Active reports whether the run may still be executing somewhere.
func (s Status) Active() bool { return !s.Terminal() }

// transitions is the one place the allowed moves are written down. Any non-terminal
// status may also move to Failed, CancelRequested or Canceled (see CanTransition).
var transitions = map[Status][]Status{
	NotStarted: {Queued, Preparing, Starting, Running},
	// A short run may end between two observations: from Queued or
	// Preparing straight to its end.
	Queued: {Preparing, Starting, Running, Finalizing, Completed},
	// Back to Queued: a managed pool requeues (once) a run whose node was lost.
	Preparing:  {Starting, Running, Queued, Finalizing, Completed},
	Starting:   {Queued, Preparing, Running, Finalizing, Completed},
	Running:    {Finalizing, Completed, Queued},
	Finalizing: {Completed},
	// A run may finish on its own before a cancel reaches it (or may already have
	// finished unobserved when the cancel was requested); its real outcome wins.
	CancelRequested: {Finalizing, Completed},
}

// CanTransition reports whether a run may move from one status to another.
// Staying put is always allowed so that repeated observations are harmless.
func CanTransition(from, to Status) bool {
	if from == to {
		return true
	}
	if from.Terminal() {
		return false
	}
	if to == Failed || to == Canceled || to == CancelRequested {
		return true
	}
	return slices.Contains(transitions[from], to)
}

// CheckTransition returns an error describing a forbidden move.
func CheckTransition(from, to Status) error {
	if !CanTransition(from, to) {
		return fmt.Errorf("run status cannot move from %s to %s", from, to)
	}
	return nil
}
