package engine_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// RunLogs follows an active run from an offset until it ends; every byte
// comes once.
func TestRunLogsResumable(t *testing.T) {
	te := setup(t, nil)
	src := writeSource(t, map[string]string{"train.py": "import time, aml_run\nfor i in range(6):\n    aml_run.log('loss', 1.0/(i+1), step=i)\n    print('line', i, flush=True)\n    time.sleep(0.3)\n"})
	r := te.submit(t, te.request(src, "train.py"))
	ctx := context.Background()
	var got strings.Builder
	var offset int64
	sawActive, sawLive := false, false
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		b, next, active, err := te.e.RunLogs(ctx, r.ID, offset)
		if err != nil {
			t.Fatal(err)
		}
		if next != offset+int64(len(b)) {
			t.Fatalf("next %d after %d bytes from %d", next, len(b), offset)
		}
		got.Write(b)
		offset = next
		sawActive = sawActive || active
		if active && len(b) > 0 {
			if ms, _, err := te.e.LiveMetricHistory(ctx, r.ID); err == nil && len(ms) > 0 {
				sawLive = true
			}
		}
		if !active && len(b) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	want := "line 0\nline 1\nline 2\nline 3\nline 4\nline 5\n"
	if got.String() != want || !sawActive {
		t.Fatalf("followed log %q (saw active: %v), want %q", got.String(), sawActive, want)
	}
	if !sawLive {
		t.Errorf("no metric history while the run was active")
	}
	if b, next, active, err := te.e.RunLogs(ctx, r.ID, 5); err != nil || active || string(b) != want[5:] || next != int64(len(want)) {
		t.Fatalf("RunLogs from 5 of a finished run: %q %d %v %v", b, next, active, err)
	}
	done, err := te.e.ReadRun(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []run.Status{run.Starting, run.Running, run.Finalizing, run.Completed} {
		if done.Phases[p].IsZero() {
			t.Errorf("no time for phase %s: %v", p, done.Phases)
		}
	}
	if !done.Phases[run.Running].Before(done.Phases[run.Completed]) {
		t.Errorf("phases out of order: %v", done.Phases)
	}
	ts, err := te.e.ListTargets(ctx, te.ws)
	if err != nil || len(ts) != 1 || ts[0].Name != engine.LocalTarget || ts[0].Facts.Cores == 0 {
		t.Fatalf("ListTargets: %+v %v", ts, err)
	}
	files, err := te.e.RunSnapshotFiles(ctx, r.ID)
	if err != nil || len(files) != 1 || files[0].Path != "train.py" {
		t.Fatalf("RunSnapshotFiles: %+v %v", files, err)
	}
}

// OpenRunOutput opens only regular files beneath the run's outputs.
func TestOpenRunOutputStaysInOutputs(t *testing.T) {
	te := setup(t, nil)
	src := writeSource(t, map[string]string{"train.py": "import os\nd = os.environ['AML_OUTPUTS_DIR']\nos.makedirs(os.path.join(d, 'sub'))\nopen(os.path.join(d, 'sub', 'm.txt'), 'w').write('model')\nopen(os.path.join(d, '100%.txt'), 'w').write('pct')\n"})
	r := te.submit(t, te.request(src, "train.py"))
	done, err := waitRun(t, te.e, r.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(te.workDir, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(secret, filepath.Join(done.OutputsPath, "out")))
	must(os.Symlink("..", filepath.Join(done.OutputsPath, "up")))
	must(syscall.Mkfifo(filepath.Join(done.OutputsPath, "fifo"), 0o644))
	ctx := context.Background()
	for _, name := range []string{"sub/m.txt", run.EncodeName("100%.txt")} {
		f, st, err := te.e.OpenRunOutput(ctx, r.ID, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, _ := io.ReadAll(f)
		f.Close()
		if len(b) == 0 || st.Size() != int64(len(b)) {
			t.Fatalf("%s: %q", name, b)
		}
	}
	for _, name := range []string{"out", "up/logs/std_log.txt", "fifo", "../logs/std_log.txt", "/etc/passwd", "sub", "", "sub/../../logs/std_log.txt", "a\x00b"} {
		f, _, err := te.e.OpenRunOutput(ctx, r.ID, name)
		if err == nil {
			f.Close()
			t.Errorf("%q was opened", name)
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%q: %v, want a not-exist error", name, err)
		}
	}
}
