package slurm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/snapshot"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
	slurmtest "github.com/openaml/terraform-provider-aml/internal/testutil/slurm"
)

// BenchmarkSubmitThroughput submits BENCH_SLURM_RUNS (default 100) short runs
// through the attachment and the same number of plain `sbatch --wrap` jobs (the
// floor: no staging, no supervisor), on the real test cluster, and prints
// submit-to-start latency and throughput side by side (bench/slurm.sh).
func BenchmarkSubmitThroughput(b *testing.B) {
	n := 100
	if v, err := strconv.Atoi(os.Getenv("BENCH_SLURM_RUNS")); err == nil && v > 0 {
		n = v
	}
	c := slurmtest.Start(b)
	b.Setenv("SLURM_CONF", c.Conf)
	root := filepath.Join(c.Dir, "shared")
	if err := os.MkdirAll(root, 0o755); err != nil {
		b.Fatal(err)
	}
	exe, _ := os.Executable()
	blobs := snapshot.BlobStore{Root: b.TempDir()}
	spec := Spec{SharedRoot: root}
	var st State
	if err := probe(context.Background(), &localCluster{root: root}, spec, &st); err != nil {
		b.Fatal(err)
	}
	d := &Driver{Spec: spec, State: st, name: "bench", c: &localCluster{root: root, blobs: blobs, agentPath: exe}}
	ctx := context.Background()
	src := testutil.WriteFiles(b, b.TempDir(), map[string]string{"train.py": "pass\n"})
	m, err := snapshot.Build(ctx, src, snapshot.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := blobs.Ingest(ctx, src, m); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		// Ours: Start (stage + sbatch), then the rank supervisor's start time.
		ours, oursSpan := make([]time.Duration, n), time.Duration(0)
		began := time.Now()
		var wg sync.WaitGroup
		for r := 0; r < n; r++ {
			submitted := time.Now()
			h, err := d.Start(ctx, drivers.RunSpec{RunID: fmt.Sprintf("bench_%d_%d", i, r), Manifest: m, Blobs: blobs,
				Program: drivers.Program{Script: "train.py"}, Launch: env.Launch{Interpreter: "python3"}, Grace: time.Second})
			if err != nil {
				b.Fatal(err)
			}
			ex, _ := d.Recover(ctx, h)
			wg.Add(1)
			go func(r int) {
				defer wg.Done()
				wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
				defer cancel()
				st, err := ex.Wait(wctx)
				if err != nil || st.Status != run.Completed || st.StartTime == nil {
					b.Errorf("run %d: %+v %v", r, st, err)
					return
				}
				ours[r] = st.StartTime.Sub(submitted)
			}(r)
		}
		wg.Wait()
		oursSpan = time.Since(began)

		// The floor: sbatch --wrap writing its start time.
		marks := b.TempDir()
		floor := make([]time.Duration, n)
		submitted := make([]time.Time, n)
		began = time.Now()
		for r := 0; r < n; r++ {
			submitted[r] = time.Now()
			if out, err := c.Run("sbatch", "--parsable", "--output=/dev/null", "--wrap", fmt.Sprintf("date +%%s.%%N > %s/%d", marks, r)); err != nil {
				b.Fatalf("sbatch: %v %s", err, out)
			}
		}
		testutil.WaitFor(b, 10*time.Minute, "the sbatch --wrap jobs", func() bool {
			ents, _ := os.ReadDir(marks)
			return len(ents) == n
		})
		floorSpan := time.Since(began)
		for r := 0; r < n; r++ {
			raw, _ := os.ReadFile(filepath.Join(marks, strconv.Itoa(r)))
			f, _ := strconv.ParseFloat(strings.TrimSpace(string(raw)), 64)
			floor[r] = time.Unix(0, int64(f*1e9)).Sub(submitted[r])
		}
		med := func(ds []time.Duration) time.Duration {
			s := append([]time.Duration(nil), ds...)
			sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
			return s[len(s)/2]
		}
		fmt.Printf("\n| %d short runs, 2 slurmd nodes | aml_batch_attachment | `sbatch --wrap` | ratio |\n|---|---:|---:|---:|\n", n)
		fmt.Printf("| submit→start, median | %.2f s | %.2f s | %.2fx |\n", med(ours).Seconds(), med(floor).Seconds(), med(ours).Seconds()/med(floor).Seconds())
		fmt.Printf("| throughput (runs/s, submit of the first to end of the last) | %.2f | %.2f | %.2fx |\n",
			float64(n)/oursSpan.Seconds(), float64(n)/floorSpan.Seconds(), floorSpan.Seconds()/oursSpan.Seconds())
		b.ReportMetric(med(ours).Seconds()/med(floor).Seconds(), "start-latency-ratio")
	}
}
