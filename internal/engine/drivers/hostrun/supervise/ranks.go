package supervise

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// NodeFile is written by a pool node into a run directory before it starts the
// supervisor: what this node adds to the run (its CPUs, GPUs, identity).
const nodeFile = "node.json"

// NodeAssignment is the content of the node file.
type NodeAssignment struct {
	NodeID string            `json:"node_id"`
	CPUs   []int             `json:"cpus,omitempty"`
	Env    map[string]string `json:"env,omitempty"`
}

// WriteNodeAssignment records a node's assignment in a run directory.
func WriteNodeAssignment(runDir string, a NodeAssignment) error {
	return WriteJSONAtomic(filepath.Join(runDir, ControlDir, nodeFile), a)
}

func readNodeAssignment(l Layout) (*NodeAssignment, error) {
	var a NodeAssignment
	if err := l.readJSON(filepath.Join(l.Control(), nodeFile), &a); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return &a, nil
}

// ReadState returns the supervisor's last recorded state of a run directory,
// without judging liveness (pools reap dead nodes themselves).
func ReadState(runDir string) (run.State, error) {
	st, err := ReadStatus(Layout{Dir: runDir})
	if err != nil {
		return run.State{}, err
	}
	if st == nil {
		return run.State{Status: run.Starting}, nil
	}
	return st.State, nil
}

// SupervisorStarted reports whether a supervisor has taken the run directory.
func SupervisorStarted(runDir string) bool {
	st, err := ReadStatus(Layout{Dir: runDir})
	return err == nil && st != nil && st.SupervisorPID != 0
}

// ResetForRequeue kills whatever is left of a previous attempt in the run
// directory and makes it startable again; logs are kept (appended to). A
// directory whose recorded supervisor is alive belongs to a newer attempt
// (claimed the moment the run was queued): its status and script are left
// alone, only the note is logged.
func ResetForRequeue(runDir string, note string) error {
	l := Layout{Dir: runDir}
	st, err := ReadStatus(l)
	live := err == nil && st != nil && st.SupervisorPID > 0 && ProcessAlive(st.SupervisorPID, st.SupervisorTicks)
	if err == nil && st != nil && !live {
		if st.ChildPID > 0 {
			_ = KillGroup(st.ChildPID, syscall.SIGKILL)
		}
		if st.Container != "" {
			ReapContainer(runDir)
		}
	}
	if !live {
		_ = os.Remove(l.CancelReq())
	}
	if f, err := os.OpenFile(l.StdLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		fmt.Fprintf(f, "\naml: %s\n", note)
		f.Close()
	}
	if live {
		return nil
	}
	return WriteJSONAtomic(l.Status(), SupervisorStatus{State: run.State{Status: run.Queued, Message: note}})
}

// MarkEnded records a final state for a run directory whose supervisor cannot
// (it never started, or it is gone), killing any leftover process group.
func MarkEnded(runDir string, status run.Status, reason, message string) error {
	l := Layout{Dir: runDir}
	st, err := ReadStatus(l)
	if err != nil {
		return err
	}
	if st == nil {
		st = &SupervisorStatus{}
	}
	if st.Status.Terminal() {
		return nil
	}
	if st.ChildPID > 0 {
		_ = KillGroup(st.ChildPID, syscall.SIGKILL)
	}
	if st != nil && st.Container != "" {
		ReapContainer(runDir)
	}
	now := time.Now().UTC()
	st.Status, st.FailureReason, st.Message, st.EndTime = status, reason, message, &now
	return WriteJSONAtomic(l.Status(), st)
}

// RankStates reads the recorded state of each of n ranks that share runDir (a
// batch job's); a rank that has not started yet has an empty Status.
func RankStates(runDir string, n int) ([]run.State, error) {
	out := make([]run.State, n)
	for rank := range out {
		st, err := ReadStatus(Layout{Dir: runDir, Rank: rank})
		if err != nil {
			return nil, err
		}
		if st != nil {
			out[rank] = st.State
		}
	}
	return out, nil
}

// EndRank is the body of `agent rank-epilog <run-dir>`, which a batch system
// runs after each task of a job (srun --task-epilog): when the rank's
// supervisor ended without recording a result (it was killed), its script's
// process group is stopped and the rank recorded Failed/lost, so nothing of a
// lost rank keeps running on the node.
func EndRank(runDir string, rank int) error {
	l := Layout{Dir: runDir, Rank: rank}
	st, err := ReadStatus(l)
	if err != nil || st == nil || st.Status.Terminal() {
		return err
	}
	if ProcessAlive(st.SupervisorPID, st.SupervisorTicks) {
		return nil
	}
	if st.ChildPID > 0 {
		_ = KillGroup(st.ChildPID, syscall.SIGKILL)
	}
	if st != nil && st.Container != "" {
		ReapContainer(runDir)
	}
	now := time.Now().UTC()
	st.Status, st.FailureReason, st.EndTime = run.Failed, run.ReasonLost, &now
	st.Message = fmt.Sprintf("rank %d's supervisor (pid %d) ended without recording a result", rank, st.SupervisorPID)
	return WriteJSONAtomic(l.Status(), st)
}
