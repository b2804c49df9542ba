package slurm

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/driverstest"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/field"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
	slurmtest "github.com/openaml/terraform-provider-aml/internal/testutil/slurm"
)

func TestMain(m *testing.M) { testutil.Main(m, nil) }

func TestScript(t *testing.T) {
	s := Script("exp_1_ab", "/shared/runs/exp_1_ab", "/shared/bin/x/terraform-provider-aml", Partition{Name: "gpu"},
		Spec{Account: "ml", QOS: "normal"}, 2, 90*time.Second, Resources{CPUsPerNode: 4, MemoryPerNode: "8G", GPUsPerNode: 1, SbatchOptions: []string{"--constraint=a100"}})
	for _, want := range []string{"#SBATCH --job-name=aml-exp_1_ab\n", "#SBATCH --nodes=2\n", "#SBATCH --ntasks-per-node=1\n",
		"#SBATCH --output=/shared/runs/exp_1_ab/logs/slurm-%j.out\n", "#SBATCH --partition=gpu\n", "#SBATCH --account=ml\n", "#SBATCH --qos=normal\n",
		"#SBATCH --time=3\n", "#SBATCH --signal=USR1@60\n", "#SBATCH --cpus-per-task=4\n", "#SBATCH --mem=8G\n", "#SBATCH --gres=gpu:1\n",
		"#SBATCH --constraint=a100\n", "#SBATCH --requeue\n", "-gt 1 ]; then", "exec srun --kill-on-bad-exit=1 --ntasks-per-node=1 --task-epilog=/shared/runs/exp_1_ab/.aml/task-epilog.sh /shared/bin/x/terraform-provider-aml agent supervise-rank /shared/runs/exp_1_ab\n",
		"export MASTER_ADDR MASTER_PORT AML_ATTEMPT"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
}

func TestCheckResources(t *testing.T) {
	for _, tc := range []struct {
		r    Resources
		attr string
	}{
		{Resources{MemoryPerNode: "lots"}, "slurm.memory_per_node"},
		{Resources{CPUsPerNode: -1}, "slurm.cpus_per_node"},
		{Resources{SbatchOptions: []string{"--nodes=4"}}, "slurm.sbatch_options[0]"},
		{Resources{SbatchOptions: []string{"constraint"}}, "slurm.sbatch_options[0]"},
		{Resources{MaxRetries: -2}, "slurm.max_retries"},
	} {
		err := CheckResources(&tc.r)
		if fe, ok := err.(*field.Error); !ok || fe.Attr != tc.attr {
			t.Errorf("%+v: %v, want an error on %s", tc.r, err, tc.attr)
		}
	}
	if err := CheckResources(&Resources{CPUsPerNode: 2, MemoryPerNode: "512M", SbatchOptions: []string{"--exclusive"}}); err != nil {
		t.Error(err)
	}
}

// localDriver is a driver of the test cluster submitting from this machine.
func localDriver(t *testing.T, c *slurmtest.Cluster) (func(t *testing.T) drivers.Driver, snapshot.BlobStore) {
	t.Helper()
	t.Setenv("SLURM_CONF", c.Conf)
	root := filepath.Join(c.Dir, "shared")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	blobs := snapshot.BlobStore{Root: t.TempDir()}
	spec := Spec{SharedRoot: root}
	var st State
	if err := probe(context.Background(), &localCluster{root: root}, spec, &st); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if st.ClusterName != "amltest" || st.DefaultPartition != "debug" || len(st.Partitions) != 2 || st.SlurmVersion == "" {
		t.Fatalf("probe found %+v", st)
	}
	return func(t *testing.T) drivers.Driver {
		return &Driver{Spec: spec, State: st, name: "hpc", c: &localCluster{root: root, blobs: blobs, agentPath: exe}}
	}, blobs
}

// The suite through sbatch and srun on real slurmd nodes: a 2-node run gets a
// node each.
func TestConformance(t *testing.T) {
	c := slurmtest.Start(t)
	open, blobs := localDriver(t, c)
	driverstest.Run(t, driverstest.Target{Open: open, Blobs: blobs, Wait: 90 * time.Second})
}

func TestProbeUnknownPartition(t *testing.T) {
	c := slurmtest.Start(t)
	t.Setenv("SLURM_CONF", c.Conf)
	var st State
	err := probe(context.Background(), &localCluster{root: t.TempDir()}, Spec{Partition: "gpu"}, &st)
	if fe, ok := err.(*field.Error); !ok || fe.Attr != "partition" || !strings.Contains(fe.Msg, "it has: debug, single") {
		t.Fatalf("got %v", err)
	}
}

func startRun(t *testing.T, d drivers.Driver, blobs snapshot.BlobStore, script string) (drivers.Handle, drivers.Execution) {
	t.Helper()
	ctx := context.Background()
	src := testutil.WriteFiles(t, t.TempDir(), map[string]string{"train.py": script})
	m, err := snapshot.Build(ctx, src, snapshot.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := blobs.Ingest(ctx, src, m); err != nil {
		t.Fatal(err)
	}
	h, err := d.Start(ctx, drivers.RunSpec{RunID: fmt.Sprintf("slurm_%d", time.Now().UnixNano()), Manifest: m, Blobs: blobs,
		Program: drivers.Program{Script: "train.py"}, Launch: env.Launch{Interpreter: "python3"}, Grace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := d.Recover(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	return h, ex
}

// The controller down while a job runs: the run is not failed (unreachable,
// status as last seen) and its status comes back with the controller. Down at
// submit time: bounded retries, then an error that says so.
func TestControllerDown(t *testing.T) {
	c := slurmtest.Start(t)
	open, blobs := localDriver(t, c)
	d := open(t)
	ctx := context.Background()
	_, ex := startRun(t, d, blobs, "import time\ntime.sleep(15)\n")
	testutil.WaitFor(t, 60*time.Second, "the job to run", func() bool {
		st, err := ex.Status(ctx)
		return err == nil && st.Status == run.Running
	})
	time.Sleep(2 * time.Second) // the controller has saved the job's state
	c.Kill("slurmctld")
	if _, err := ex.Status(ctx); !drivers.IsUnreachable(err) {
		t.Fatalf("status with the controller down: %v, want unreachable", err)
	}
	start := time.Now()
	_, err := d.Start(ctx, drivers.RunSpec{RunID: "while_down", Manifest: &snapshot.Manifest{}, Blobs: blobs, Program: drivers.Program{Script: "x.py"}})
	if err == nil || !strings.Contains(err.Error(), "does not answer (tried 4 times)") {
		t.Fatalf("submit with the controller down: %v", err)
	}
	t.Logf("refused after %s", time.Since(start).Round(time.Millisecond))
	c.Start("slurmctld")
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	st, err := ex.Wait(wctx)
	if err != nil || st.Status != run.Completed {
		t.Fatalf("after the controller came back: %+v, %v", st, err)
	}
}

// scancel from outside the provider: the run is Canceled.
func TestScancelFromOutside(t *testing.T) {
	c := slurmtest.Start(t)
	open, blobs := localDriver(t, c)
	d := open(t)
	h, ex := startRun(t, d, blobs, "import time\nprint('up', flush=True)\ntime.sleep(120)\n")
	var jh handle
	_ = json.Unmarshal(h, &jh)
	testutil.WaitFor(t, 60*time.Second, "the job to run", func() bool {
		st, err := ex.Status(context.Background())
		return err == nil && st.Status == run.Running
	})
	if out, err := c.Run("scancel", jh.JobID); err != nil {
		t.Fatalf("scancel: %v %s", err, out)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := ex.Wait(wctx)
	if err != nil || st.Status != run.Canceled || st.FailureReason != run.ReasonCanceled {
		t.Fatalf("after scancel: %+v, %v", st, err)
	}
}
