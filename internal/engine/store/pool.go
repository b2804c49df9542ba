package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"
)

// Node states of a managed pool.
const (
	NodeStarting = "starting" // reserved; its agent process is being started
	NodeIdle     = "idle"
	NodeRunning  = "running" // assigned a rank of a run
	NodeLeaving  = "leaving" // asked to stop (drain)
)

// Queue states.
const (
	QueueQueued   = "queued"
	QueueAssigned = "assigned"
	QueueDone     = "done"
)

// NodeRow is one node agent of a pool.
type NodeRow struct {
	ID, Compute, State, RunID string
	Host                      string // the machine running the agent ("" before schema 6)
	Slot, PID, Rank           int
	Ticks                     uint64
	StartedAt, HeartbeatAt    time.Time
	IdleSince                 time.Time
}

// QueueRow is one run waiting for, or assigned to, pool nodes.
type QueueRow struct {
	RunID, Compute, State string
	NodeCount, Attempts   int
	EnqueuedAt            time.Time
	AssignedAt            time.Time
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTS(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

const nodeCols = `id, compute, slot, pid, ticks, state, run_id, rank, started_at, heartbeat_at, idle_since, host`

type rowScanner interface{ Scan(...any) error }

func scanNode(r rowScanner) (NodeRow, error) {
	var n NodeRow
	var started, hb, idle string
	err := r.Scan(&n.ID, &n.Compute, &n.Slot, &n.PID, &n.Ticks, &n.State, &n.RunID, &n.Rank, &started, &hb, &idle, &n.Host)
	n.StartedAt, n.HeartbeatAt, n.IdleSince = parseTS(started), parseTS(hb), parseTS(idle)
	return n, err
}

func queryNodes(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, where string, args ...any) ([]NodeRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+nodeCols+` FROM pool_nodes WHERE `+where+` ORDER BY slot, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []NodeRow
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// Nodes lists a pool's nodes.
func (s *Store) Nodes(ctx context.Context, compute string) ([]NodeRow, error) {
	return queryNodes(ctx, s.db, `compute = ?`, compute)
}

// Node reads one node; ErrNotFound when it was removed.
func (s *Store) Node(ctx context.Context, id string) (NodeRow, error) {
	n, err := scanNode(s.db.QueryRowContext(ctx, `SELECT `+nodeCols+` FROM pool_nodes WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return n, fmt.Errorf("pool node %q: %w", id, ErrNotFound)
	}
	return n, err
}

// ReserveNodes adds node rows (state starting) until the pool has want nodes,
// in one transaction so concurrent callers never exceed it. It returns the new
// rows; their agents are then started by the caller.
func (s *Store) ReserveNodes(ctx context.Context, compute string, want int, newID func(slot int) string) ([]NodeRow, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	nodes, err := queryNodes(ctx, tx, `compute = ? AND state != ?`, compute, NodeLeaving)
	if err != nil {
		return nil, err
	}
	used := map[int]bool{}
	for _, n := range nodes {
		used[n.Slot] = true
	}
	var added []NodeRow
	now := time.Now()
	for slot := 0; len(nodes)+len(added) < want; slot++ {
		if used[slot] {
			continue
		}
		n := NodeRow{ID: newID(slot), Compute: compute, Host: Hostname(), Slot: slot, State: NodeStarting, StartedAt: now, HeartbeatAt: now, IdleSince: now}
		if _, err := tx.ExecContext(ctx, `INSERT INTO pool_nodes(`+nodeCols+`) VALUES (?, ?, ?, 0, 0, ?, '', 0, ?, ?, ?, ?)`,
			n.ID, n.Compute, n.Slot, n.State, ts(now), ts(now), ts(now), n.Host); err != nil {
			return nil, err
		}
		added = append(added, n)
	}
	return added, tx.Commit()
}

// NodeStarted records a node agent's process and makes it idle.
func (s *Store) NodeStarted(ctx context.Context, id string, pid int, ticks uint64) error {
	now := ts(time.Now())
	res, err := s.db.ExecContext(ctx, `UPDATE pool_nodes SET pid = ?, ticks = ?, state = CASE state WHEN ? THEN ? ELSE state END, heartbeat_at = ?, idle_since = ? WHERE id = ?`,
		pid, ticks, NodeStarting, NodeIdle, now, now, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("pool node %q: %w", id, ErrNotFound)
	}
	return nil
}

// Heartbeat refreshes a node's lease and returns its row (ErrNotFound once it
// has been removed: the agent should exit).
func (s *Store) Heartbeat(ctx context.Context, id string) (NodeRow, error) {
	if _, err := s.db.ExecContext(ctx, `UPDATE pool_nodes SET heartbeat_at = ? WHERE id = ?`, ts(time.Now()), id); err != nil {
		return NodeRow{}, err
	}
	return s.Node(ctx, id)
}

// SetNodeState moves a node (e.g. to leaving for a drain).
func (s *Store) SetNodeState(ctx context.Context, compute, state string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE pool_nodes SET state = ? WHERE compute = ?`, state, compute)
	return err
}

// RemoveNode deletes a node row.
func (s *Store) RemoveNode(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM pool_nodes WHERE id = ?`, id)
	return err
}

// RetireNode removes an idle node if the pool keeps more than minNodes; it
// reports whether the node may exit.
func (s *Store) RetireNode(ctx context.Context, id string, minNodes int) (bool, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	n, err := scanNode(tx.QueryRowContext(ctx, `SELECT `+nodeCols+` FROM pool_nodes WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if n.State != NodeIdle {
		return false, nil
	}
	var count int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM pool_nodes WHERE compute = ? AND state != ?`, n.Compute, NodeLeaving).Scan(&count); err != nil {
		return false, err
	}
	if count <= minNodes {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM pool_nodes WHERE id = ?`, id); err != nil {
		return false, err
	}
	return true, tx.Commit()
}

// Enqueue adds a run to a pool's queue.
func (s *Store) Enqueue(ctx context.Context, runID, compute string, nodeCount int) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO pool_queue(run_id, compute, node_count, state, enqueued_at) VALUES (?, ?, ?, ?, ?)`,
		runID, compute, nodeCount, QueueQueued, ts(time.Now()))
	return err
}

func scanQueue(r rowScanner) (QueueRow, error) {
	var q QueueRow
	var enq, asg string
	err := r.Scan(&q.RunID, &q.Compute, &q.NodeCount, &q.State, &q.Attempts, &enq, &asg)
	q.EnqueuedAt, q.AssignedAt = parseTS(enq), parseTS(asg)
	return q, err
}

const queueCols = `run_id, compute, node_count, state, attempts, enqueued_at, assigned_at`

// QueueEntry reads a run's queue row.
func (s *Store) QueueEntry(ctx context.Context, runID string) (QueueRow, error) {
	q, err := scanQueue(s.db.QueryRowContext(ctx, `SELECT `+queueCols+` FROM pool_queue WHERE run_id = ?`, runID))
	if errors.Is(err, sql.ErrNoRows) {
		return q, fmt.Errorf("queued run %q: %w", runID, ErrNotFound)
	}
	return q, err
}

// QueueDemand counts queued runs and the nodes they need.
func (s *Store) QueueDemand(ctx context.Context, compute string) (runs, nodes int, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(node_count), 0) FROM pool_queue WHERE compute = ? AND state = ?`, compute, QueueQueued).Scan(&runs, &nodes)
	return
}

// ActiveQueue lists runs queued or assigned on a pool.
func (s *Store) ActiveQueue(ctx context.Context, compute string) ([]QueueRow, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+queueCols+` FROM pool_queue WHERE compute = ? AND state != ? ORDER BY enqueued_at`, compute, QueueDone)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []QueueRow
	for rows.Next() {
		q, err := scanQueue(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, q)
	}
	return out, rows.Err()
}

// Claim gang-schedules the oldest queued run of the pool that fits: node id
// takes rank 0 and the other ranks go to the pool's other idle nodes with a fresh
// lease. It returns the run id, or "" when nothing fits.
func (s *Store) Claim(ctx context.Context, compute, nodeID string, fresh time.Duration) (string, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	me, err := scanNode(tx.QueryRowContext(ctx, `SELECT `+nodeCols+` FROM pool_nodes WHERE id = ?`, nodeID))
	if err != nil || me.State != NodeIdle {
		return "", nil
	}
	q, err := scanQueue(tx.QueryRowContext(ctx, `SELECT `+queueCols+` FROM pool_queue WHERE compute = ? AND state = ? ORDER BY enqueued_at LIMIT 1`, compute, QueueQueued))
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	others, err := queryNodes(ctx, tx, `compute = ? AND state = ? AND id != ? AND heartbeat_at >= ?`, compute, NodeIdle, nodeID, ts(time.Now().Add(-fresh)))
	if err != nil {
		return "", err
	}
	if len(others)+1 < q.NodeCount {
		return "", nil // wait for the gang (the autoscaler adds nodes)
	}
	gang := append([]NodeRow{me}, others[:q.NodeCount-1]...)
	for rank, n := range gang {
		if _, err := tx.ExecContext(ctx, `UPDATE pool_nodes SET state = ?, run_id = ?, rank = ? WHERE id = ?`, NodeRunning, q.RunID, rank, n.ID); err != nil {
			return "", err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE pool_queue SET state = ?, assigned_at = ? WHERE run_id = ?`, QueueAssigned, ts(time.Now()), q.RunID); err != nil {
		return "", err
	}
	return q.RunID, tx.Commit()
}

// ReleaseNode returns a node to idle after its rank ended.
func (s *Store) ReleaseNode(ctx context.Context, id, runID string) error {
	now := ts(time.Now())
	_, err := s.db.ExecContext(ctx, `UPDATE pool_nodes SET state = CASE state WHEN ? THEN ? ELSE state END, run_id = '', rank = 0, idle_since = ? WHERE id = ? AND run_id = ?`,
		NodeRunning, NodeIdle, now, id, runID)
	return err
}

// FinishQueued marks a run's queue entry done.
func (s *Store) FinishQueued(ctx context.Context, runID string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE pool_queue SET state = ? WHERE run_id = ?`, QueueDone, runID)
	return err
}

// LostRun is a run whose node died: Requeued says whether it goes back to the
// queue (first loss) or must be failed.
type LostRun struct {
	RunID    string
	Requeued bool
}

// ReapNodes removes nodes whose agent is gone (alive says false, or no heartbeat
// within stale), requeues each of their runs once, and fails it the second time:
// the gang's other nodes are released. One transaction, so several reapers (node
// agents, the engine) never requeue a run twice.
func (s *Store) ReapNodes(ctx context.Context, compute string, stale time.Duration, alive func(NodeRow) bool) ([]LostRun, error) {
	nodes, err := s.Nodes(ctx, compute)
	if err != nil {
		return nil, err
	}
	var dead []string
	for _, n := range nodes {
		if time.Since(n.HeartbeatAt) > stale || (n.PID != 0 && !alive(n)) {
			dead = append(dead, n.ID)
		}
	}
	if len(dead) == 0 {
		return nil, nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var lost []LostRun
	seen := map[string]bool{}
	for _, id := range dead {
		n, err := scanNode(tx.QueryRowContext(ctx, `SELECT `+nodeCols+` FROM pool_nodes WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			continue // another reaper got it
		}
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM pool_nodes WHERE id = ?`, id); err != nil {
			return nil, err
		}
		if n.RunID == "" || seen[n.RunID] {
			continue
		}
		seen[n.RunID] = true
		q, err := scanQueue(tx.QueryRowContext(ctx, `SELECT `+queueCols+` FROM pool_queue WHERE run_id = ?`, n.RunID))
		if err != nil || q.State != QueueAssigned {
			continue
		}
		requeue := q.Attempts < 1
		state := QueueDone
		if requeue {
			state = QueueQueued
		}
		if _, err := tx.ExecContext(ctx, `UPDATE pool_queue SET state = ?, attempts = attempts + 1, assigned_at = '' WHERE run_id = ?`, state, n.RunID); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE pool_nodes SET state = ?, run_id = '', rank = 0, idle_since = ? WHERE run_id = ? AND state = ?`,
			NodeIdle, ts(time.Now()), n.RunID, NodeRunning); err != nil {
			return nil, err
		}
		lost = append(lost, LostRun{RunID: n.RunID, Requeued: requeue})
	}
	return lost, tx.Commit()
}

// DeletePool removes a pool's nodes and queue rows (after a drain).
func (s *Store) DeletePool(ctx context.Context, compute string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM pool_nodes WHERE compute = ?`, compute); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `DELETE FROM pool_queue WHERE compute = ? AND state != ?`, compute, QueueAssigned)
	return err
}

// Hostname is this machine's name as node rows record it.
func Hostname() string {
	h, _ := os.Hostname()
	return h
}
