package store_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/store"
	"github.com/openaml/terraform-provider-aml/internal/testutil/postgres"
)

// backend is one way of keeping a workspace; the suite runs on each.
type backend struct {
	name string
	// create makes a fresh workspace, closed when the test ends.
	create func(t *testing.T) *store.Store
	// open is another handle on s's workspace, as another provider process
	// (or machine) has; closed when the test ends.
	open func(t *testing.T, s *store.Store) *store.Store
	// ref names s's workspace to a child process (see childEnv).
	ref func(s *store.Store) []string
}

func embedded() backend {
	return backend{
		name:   "embedded",
		create: newStore,
		open: func(t *testing.T, s *store.Store) *store.Store {
			t.Helper()
			o, err := store.Open(context.Background(), s.Dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { o.Close() })
			return o
		},
		ref: func(s *store.Store) []string { return []string{"AML_STORE_CHILD_DIR=" + s.Dir} },
	}
}

// shared keeps every workspace of the suite in one database: they must not
// see each other's rows.
func shared(url string) backend {
	n := 0
	var mu sync.Mutex
	sh := func(t *testing.T) store.Shared { return store.Shared{Postgres: url, CacheRoot: t.TempDir()} }
	return backend{
		name: "shared",
		create: func(t *testing.T) *store.Store {
			t.Helper()
			mu.Lock()
			n++
			name := fmt.Sprintf("ws%d", n)
			mu.Unlock()
			s, err := store.CreateShared(context.Background(), sh(t), store.Meta{Name: name})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		open: func(t *testing.T, s *store.Store) *store.Store {
			t.Helper()
			// Another machine: its own, empty cache.
			o, err := store.OpenShared(context.Background(), sh(t), s.SharedID())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { o.Close() })
			return o
		},
		ref: func(s *store.Store) []string {
			return []string{"AML_STORE_CHILD_PG=" + url, "AML_STORE_CHILD_WS=" + s.SharedID()}
		},
	}
}

var suite = []struct {
	name string
	fn   func(t *testing.T, b backend)
}{
	{"ReopenKeepsData", testReopenKeepsData},
	{"RunConfigs", testRunConfigs},
	{"RunInsertGetUpdate", testRunInsertGetUpdate},
	{"LastRunOfSubmission", testLastRunOfSubmission},
	{"ReplaceMetrics", testReplaceMetrics},
	{"ClaimOrphan", testClaimOrphan},
	{"ClaimOrphanPicksOldest", testClaimOrphanPicksOldest},
	{"ConcurrentStores", testConcurrentStores},
	{"NewerSchemaRefused", testNewerSchemaRefused},
	{"OlderSchemaMigrated", testOlderSchemaMigrated},
	{"ConcurrentAdoption", testConcurrentAdoption},
	{"ConcurrentReserveNodes", testConcurrentReserveNodes},
	{"PoolClaimsAcrossHandles", testPoolClaimsAcrossHandles},
	{"PoolClaimsAcrossProcesses", testPoolClaimsAcrossProcesses},
	{"Targets", testTargets},
	{"NodeHost", testNodeHost},
}

func runSuite(t *testing.T, b backend) {
	for _, c := range suite {
		t.Run(c.name, func(t *testing.T) { c.fn(t, b) })
	}
}

// TestStoreSuite runs one suite on the embedded store (SQLite + directory)
// and on the shared one (a real PostgreSQL, started here).
func TestStoreSuite(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { runSuite(t, embedded()) })
	t.Run("shared", func(t *testing.T) {
		pg := postgres.Start(t)
		runSuite(t, shared(pg.NewDB(t)))
	})
}

func testNewerSchemaRefused(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.create(t)
	newer := store.SchemaVersion + 1
	if err := store.SetSchemaVersion(ctx, s, newer); err != nil {
		t.Fatal(err)
	}
	s.Close()
	var err error
	if s.SharedID() != "" {
		_, err = store.OpenShared(ctx, store.Shared{Postgres: urlOf(t, b, s), CacheRoot: t.TempDir()}, s.SharedID())
	} else {
		_, err = store.Open(ctx, s.Dir)
	}
	if !errors.Is(err, store.ErrNewerVersion) {
		t.Fatalf("err = %v, want ErrNewerVersion", err)
	}
	for _, want := range []string{fmt.Sprintf("version %d", newer), fmt.Sprintf("up to %d", store.SchemaVersion)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

// A workspace written at every older schema version (since 4, where a
// workspace got its uid: Create writes it) opens, is migrated forward and
// keeps its rows; several handles opening it at once migrate it once. (The
// embedded store's migrations before 4 are tested with their own fixtures.)
func testOlderSchemaMigrated(t *testing.T, b backend) {
	ctx := context.Background()
	latest := store.SchemaVersion
	defer func() { store.SchemaVersion = latest }()
	for v := 4; v < latest; v++ {
		t.Run(fmt.Sprintf("from %d", v), func(t *testing.T) {
			store.SchemaVersion = v
			s := b.create(t)
			if err := s.PutRunConfig(ctx, store.RunConfigRow{Name: "rc", Spec: []byte(`{"v":1}`), EnvironmentHash: "h"}); err != nil {
				t.Fatal(err)
			}
			s.Close()
			store.SchemaVersion = latest
			var wg sync.WaitGroup
			handles := make([]*store.Store, 3)
			for i := range handles {
				wg.Add(1)
				go func() { defer wg.Done(); handles[i] = b.open(t, s) }()
			}
			wg.Wait()
			o := handles[0]
			if o == nil {
				t.FailNow()
			}
			if row, err := o.GetRunConfig(ctx, "rc"); err != nil || string(row.Spec) != `{"v":1}` {
				t.Errorf("run configuration after migration: %+v, %v", row, err)
			}
			if err := o.PutTarget(ctx, store.TargetRow{Name: "t", Kind: "ssh", Spec: []byte(`{}`)}); err != nil {
				t.Errorf("targets after migration: %v", err)
			}
			if err := o.InsertRun(ctx, newRecord("r", "k"), ""); err != nil {
				t.Fatal(err)
			}
			if err := o.Enqueue(ctx, "r", "p", 1); err != nil {
				t.Errorf("pool queue after migration: %v", err)
			}
		})
	}
}

func urlOf(t *testing.T, b backend, s *store.Store) string {
	for _, kv := range b.ref(s) {
		if v, ok := strings.CutPrefix(kv, "AML_STORE_CHILD_PG="); ok {
			return v
		}
	}
	t.Fatal("no connection string")
	return ""
}

// One orphaned run, many adopters on several handles at once: exactly one
// adopts it.
func testConcurrentAdoption(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.create(t)
	handles := []*store.Store{s, b.open(t, s), b.open(t, s)}
	if err := s.InsertRun(ctx, newRecord("r1", "key"), "dead"); err != nil {
		t.Fatal(err)
	}
	alive := func(o string) bool { return o != "dead" }
	var wg sync.WaitGroup
	var mu sync.Mutex
	var winners []string
	for i := 0; i < 9; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			me := fmt.Sprintf("p%d", i)
			rec, err := handles[i%len(handles)].ClaimOrphan(ctx, "key", me, alive)
			if err != nil {
				t.Error(err)
				return
			}
			if rec != nil {
				mu.Lock()
				winners = append(winners, me)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("adopted by %v, want exactly one adopter", winners)
	}
}

// Two handles growing one pool at once never exceed the size they ask for.
func testConcurrentReserveNodes(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.create(t)
	handles := []*store.Store{s, b.open(t, s)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	seq := 0
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := handles[i%2].ReserveNodes(ctx, "p", 4, func(slot int) string {
				mu.Lock()
				defer mu.Unlock()
				seq++
				return fmt.Sprintf("n%d-%d", slot, seq)
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	nodes, err := s.Nodes(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	slots := map[int]bool{}
	for _, n := range nodes {
		if slots[n.Slot] {
			t.Errorf("slot %d reserved twice", n.Slot)
		}
		slots[n.Slot] = true
	}
	if len(nodes) != 4 {
		t.Errorf("pool has %d nodes, want 4", len(nodes))
	}
}

// pool makes compute "p" with n idle nodes and the given queued runs (their
// node counts); it returns the node ids.
func pool(t *testing.T, s *store.Store, n int, runs map[string]int) []string {
	t.Helper()
	ctx := context.Background()
	rows, err := s.ReserveNodes(ctx, "p", n, func(slot int) string { return fmt.Sprintf("node%d", slot) })
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range rows {
		if err := s.NodeStarted(ctx, r.ID, os.Getpid(), 1); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	names := make([]string, 0, len(runs))
	for id := range runs {
		names = append(names, id)
	}
	sort.Strings(names)
	for _, id := range names {
		if err := s.InsertRun(ctx, newRecord(id, id), ""); err != nil {
			t.Fatal(err)
		}
		if err := s.Enqueue(ctx, id, "p", runs[id]); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// nodeLoop is one node agent: claim, finish, release, until the queue is empty.
// It reports each run it got rank 0 of.
func nodeLoop(ctx context.Context, s *store.Store, node string, got func(run string)) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		run, err := s.Claim(ctx, "p", node, time.Hour)
		if err != nil {
			return fmt.Errorf("claim on %s: %w", node, err)
		}
		if run == "" {
			n, err := s.Node(ctx, node)
			if err != nil {
				return err
			}
			if n.State == store.NodeRunning {
				// Another node's gang holds us: wait for its rank 0 to free us.
				time.Sleep(5 * time.Millisecond)
				continue
			}
			q, _, err := s.QueueDemand(ctx, "p")
			if err != nil {
				return err
			}
			active, err := s.ActiveQueue(ctx, "p")
			if err != nil {
				return err
			}
			if q == 0 && len(active) == 0 {
				return nil
			}
			time.Sleep(2 * time.Millisecond)
			continue
		}
		got(run)
		// Rank 0 ends the run and frees its gang.
		nodes, err := s.Nodes(ctx, "p")
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.RunID == run {
				if err := s.ReleaseNode(ctx, n.ID, run); err != nil {
					return err
				}
			}
		}
		if err := s.FinishQueued(ctx, run); err != nil {
			return err
		}
	}
	return fmt.Errorf("node %s: queue not drained after 60 s", node)
}

func poolRuns(n int) map[string]int {
	runs := map[string]int{}
	for i := 0; i < n; i++ {
		nodes := 1
		if i%5 == 0 {
			nodes = 2 // a gang
		}
		runs[fmt.Sprintf("run%02d", i)] = nodes
	}
	return runs
}

// Nodes claiming through several handles at once: every run runs exactly once.
func testPoolClaimsAcrossHandles(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.create(t)
	handles := []*store.Store{s, b.open(t, s), b.open(t, s)}
	runs := poolRuns(30)
	nodes := pool(t, s, 4, runs)
	var mu sync.Mutex
	claimed := map[string]int{}
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := nodeLoop(ctx, handles[i%len(handles)], node, func(run string) {
				mu.Lock()
				claimed[run]++
				mu.Unlock()
			}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	checkClaimedOnce(t, runs, claimed)
}

func checkClaimedOnce(t *testing.T, runs map[string]int, claimed map[string]int) {
	t.Helper()
	for id := range runs {
		if claimed[id] != 1 {
			t.Errorf("run %s claimed %d times, want once", id, claimed[id])
		}
	}
	for id := range claimed {
		if _, ok := runs[id]; !ok {
			t.Errorf("claimed unknown run %s", id)
		}
	}
}

// The same with node agents in other processes (this test binary re-executed):
// separate connections, separate SQLite handles or PostgreSQL sessions.
func testPoolClaimsAcrossProcesses(t *testing.T, b backend) {
	s := b.create(t)
	runs := poolRuns(20)
	nodes := pool(t, s, 4, runs)
	claimed := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestStoreChildProcess$", "-test.count=1")
			cmd.Env = append(append(os.Environ(), b.ref(s)...), "AML_STORE_CHILD_NODE="+node)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Error(err)
				return
			}
			if err := cmd.Start(); err != nil {
				t.Error(err)
				return
			}
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if run, ok := strings.CutPrefix(sc.Text(), "claimed "); ok {
					mu.Lock()
					claimed[run]++
					mu.Unlock()
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("node %s process: %v\n%s", node, err, stderr.String())
			}
		}()
	}
	wg.Wait()
	checkClaimedOnce(t, runs, claimed)
}

// TestStoreChildProcess is a node agent of testPoolClaimsAcrossProcesses; it
// does nothing unless that test started it.
func TestStoreChildProcess(t *testing.T) {
	node := os.Getenv("AML_STORE_CHILD_NODE")
	if node == "" {
		return
	}
	ctx := context.Background()
	var s *store.Store
	var err error
	if dir := os.Getenv("AML_STORE_CHILD_DIR"); dir != "" {
		s, err = store.Open(ctx, dir)
	} else {
		s, err = store.OpenShared(ctx, store.Shared{Postgres: os.Getenv("AML_STORE_CHILD_PG"), CacheRoot: filepath.Join(t.TempDir(), "cache")}, os.Getenv("AML_STORE_CHILD_WS"))
	}
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := nodeLoop(ctx, s, node, func(run string) { fmt.Printf("claimed %s\n", run) }); err != nil {
		t.Fatal(err)
	}
}

func testTargets(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.create(t)
	other := b.open(t, s)
	if err := s.PutTarget(ctx, store.TargetRow{Name: "h1", Kind: "ssh", Spec: []byte(`{"host":"a"}`)}); err != nil {
		t.Fatal(err)
	}
	if err := other.PutTarget(ctx, store.TargetRow{Name: "h1", Kind: "ssh", Spec: []byte(`{"host":"b"}`), State: []byte(`{"k":1}`)}); err != nil {
		t.Fatal(err)
	}
	row, err := s.GetTarget(ctx, "h1")
	if err != nil || string(row.Spec) != `{"host":"b"}` || string(row.State) != `{"k":1}` {
		t.Fatalf("target = %+v, %v", row, err)
	}
	names, err := other.TargetNames(ctx)
	if err != nil || len(names) != 1 || names[0] != "h1" {
		t.Fatalf("names = %v, %v", names, err)
	}
	if err := s.DeleteTarget(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.GetTarget(ctx, "h1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted target: %v", err)
	}
}

// A node row records the machine of its agent, read back by every handle.
func testNodeHost(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.create(t)
	if _, err := s.ReserveNodes(ctx, "p", 1, func(int) string { return "n0" }); err != nil {
		t.Fatal(err)
	}
	n, err := b.open(t, s).Node(ctx, "n0")
	if err != nil || n.Host != store.Hostname() || n.Host == "" {
		t.Fatalf("node = %+v, %v; want host %q", n, err, store.Hostname())
	}
}
