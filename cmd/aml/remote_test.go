package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
)

const tickScript = `import time, aml_run
for i in range(10):
    aml_run.log("loss", 1.0 / (i + 1), step=i)
    print("tick", i, flush=True)
    time.sleep(0.4)
print("finished", flush=True)
`

// followOn submits tickScript to target and checks that aml logs -f, started
// while the run is active, shows every line once and exits 0 at its end.
func followOn(t *testing.T, f *fixture, target, rc string) {
	t.Helper()
	src := testutil.WriteFiles(t, t.TempDir(), map[string]string{"tick.py": tickScript})
	ctx := context.Background()
	r, err := f.e.SubmitRun(ctx, engine.RunRequest{WorkspaceID: f.ws.ID, Experiment: "remote", SourceDirectory: src,
		Script: "tick.py", ComputeTarget: target, RunConfigID: rc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if got, err := f.e.ReadRun(cctx, r.ID); err == nil && got.Status.Active() {
			_, _ = f.e.CancelRun(cctx, r.ID)
		}
	})
	res := aml(t, f.dir, "logs", "-f", r.RunID)
	if res.code != 0 {
		t.Fatalf("aml logs -f on %s: exit %d\n%s\n%s", target, res.code, res.stdout, res.stderr)
	}
	for i := 0; i < 10; i++ {
		if strings.Count(res.stdout, fmt.Sprintf("tick %d\n", i)) != 1 {
			t.Fatalf("aml logs -f on %s: tick %d not exactly once:\n%s", target, i, res.stdout)
		}
	}
	if !strings.HasSuffix(res.stdout, "finished\n") {
		t.Fatalf("aml logs -f on %s did not reach the end:\n%s", target, res.stdout)
	}
	hist := decode[[]metricView](t, aml(t, f.dir, "metrics", "--history", "--json", r.RunID).ok(t))
	if len(hist) != 10 {
		t.Fatalf("metrics of the run on %s: %d values, want 10", target, len(hist))
	}
}

// aml logs -f follows a run on a managed pool (a node agent runs it).
func TestLogsFollowPoolRun(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := f.e.CreateCompute(ctx, f.ws.ID, "cpu", engine.ComputeSpec{VMSize: "STANDARD_D1_V2", MinNodes: 0, MaxNodes: 1, IdleSecondsBeforeScaledown: 60}, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.e.DeleteCompute(context.Background(), c.ID, true); err != nil {
			t.Errorf("draining the pool: %v", err)
		}
	})
	followOn(t, f, "cpu", f.rc)
	ts := decode[[]targetView](t, aml(t, f.dir, "targets", "--json").ok(t))
	if len(ts) != 2 || ts[1].Name != "cpu" || ts[1].Nodes == nil || ts[1].Nodes.Current < 1 {
		t.Fatalf("targets with a pool: %+v", ts)
	}
	if out := aml(t, f.dir, "targets").ok(t).stdout; !strings.Contains(out, "cpu") || !strings.Contains(out, "NODES (IDLE/BUSY/STARTING)") {
		t.Fatalf("targets table:\n%s", out)
	}

	// The web view's targets page shows the pool's nodes, and refreshes
	// them: a run queued on the pool makes its node busy.
	srv := httptest.NewServer(newUI(f.e, f.ws, false))
	t.Cleanup(srv.Close)
	ctx = browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/#/"), chromedp.WaitVisible(chromedp.CSS(`#targets-table tr[data-target="cpu"]`))); err != nil {
		t.Fatal(err)
	}
	cell := func(c string) string {
		return `document.querySelector('#targets-table tr[data-target="cpu"] .` + c + `').textContent`
	}
	waitJS(t, ctx, 20*time.Second, "an idle node", cell("nodes-idle")+` === '1' && `+cell("nodes-busy")+` === '0'`)
	screenshot(t, ctx, artifacts(t), "targets-idle.png")
	src := testutil.WriteFiles(t, t.TempDir(), map[string]string{"tick.py": "import time\ntime.sleep(8)\n"})
	r, err := f.e.SubmitRun(context.Background(), engine.RunRequest{WorkspaceID: f.ws.ID, Experiment: "remote", SourceDirectory: src,
		Script: "tick.py", ComputeTarget: "cpu", RunConfigID: f.rc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = f.e.CancelRun(context.Background(), r.ID) })
	waitJS(t, ctx, 20*time.Second, "the page to refresh to a busy node", cell("nodes-busy")+` === '1'`)
	screenshot(t, ctx, artifacts(t), "targets-busy.png")
}

// aml logs -f follows a run on an SSH host through the driver's resumable
// logs (a real sshd on 127.0.0.1).
func TestLogsFollowSSHRun(t *testing.T) {
	f := newFixture(t)
	srv := sshd.Start(t, sshd.Options{})
	ctx := context.Background()
	if _, err := f.e.AttachRemote(ctx, f.ws.ID, engine.RemoteSpec{Name: "host", Address: "127.0.0.1", Port: srv.Port, Username: srv.User, HostKey: srv.HostKey},
		engine.Credentials{PrivateKey: string(srv.KeyPEM)}); err != nil {
		t.Fatalf("attach: %v\n%s", err, srv.LogTail())
	}
	rc, err := f.e.PutRunConfig(ctx, f.ws.ID, engine.RunConfigSpec{Name: "remote-py",
		Environment: env.Environment{Python: &env.Python{UserManagedDependencies: true, InterpreterPath: "python3"}}})
	if err != nil {
		t.Fatal(err)
	}
	followOn(t, f, "host", rc.ID)
	ts := decode[[]targetView](t, aml(t, f.dir, "targets", "--json").ok(t))
	if len(ts) != 2 || ts[1].Name != "host" || !strings.Contains(ts[1].Address, "127.0.0.1") {
		t.Fatalf("targets with an SSH host: %+v", ts)
	}
}
