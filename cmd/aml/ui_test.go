package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
)

// artifacts is where a test saves what a person may want to look at
// (screenshots): $AML_TEST_ARTIFACTS/<test> when set, else a temp dir.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("AML_TEST_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	dir = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("AML_CHROMIUM"); p != "" {
		return p
	}
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	t.Skip("no chromium: install it with scripts/install-chromium.sh (Debian's chromium package)")
	return ""
}

// browser starts a real headless Chromium (ended at cleanup) and returns a
// tab context. A JavaScript dialog (alert) fails the test: it would mean a
// name or log line written by a run got executed.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1280, 1000),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	var ctx context.Context
	dialogs := func(ev any) {
		if d, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			t.Errorf("a JavaScript dialog opened: %q (untrusted text was executed)", d.Message)
			go func() {
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
			}()
		}
	}
	ctx, cancelC := chromedp.NewContext(actx, chromedp.WithListener(dialogs))
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG (less: JPEG)
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

func evalInt(t *testing.T, ctx context.Context, js string) int {
	t.Helper()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return n
}

// waitJS polls a JavaScript condition in the page.
func waitJS(t *testing.T, ctx context.Context, limit time.Duration, what, js string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js)); err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("main")))
			t.Fatalf("timed out after %s waiting for %s\n%s", limit, what, html)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func setStatusFilter(t *testing.T, ctx context.Context, status string) {
	t.Helper()
	js := fmt.Sprintf(`(() => { const s = document.querySelector('#status-filter'); s.value = %q; s.dispatchEvent(new Event('change')); return true })()`, status)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js)); err != nil {
		t.Fatal(err)
	}
}

func TestWebViewInChromium(t *testing.T) {
	f := newFixture(t)
	ok1 := f.finished(t, "exp", "4", "0")
	ok2 := f.finished(t, "exp", "6", "0")
	bad := f.finished(t, "exp", "2", "0", "fail")
	srv := httptest.NewServer(newUI(f.e, f.ws, false))
	t.Cleanup(srv.Close)
	ctx := browser(t)
	shots := artifacts(t)

	// compute targets
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/#/"), chromedp.WaitVisible(chromedp.CSS(`#targets-table tr[data-target="local"]`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 10*time.Second, "experiments", `!!document.querySelector('#experiments-table a')`)
	screenshot(t, ctx, shots, "targets.png")

	// experiments -> runs table, sortable by a metric, filterable by status
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#experiments-table a`)), chromedp.WaitVisible(chromedp.CSS(`#runs-table`))); err != nil {
		t.Fatal(err)
	}
	if n := evalInt(t, ctx, `document.querySelectorAll('#runs-table tr[data-run]').length`); n != 3 {
		t.Fatalf("runs table: %d rows, want 3", n)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`th[data-sort="metric:accuracy"]`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 5*time.Second, "sorted by accuracy (descending)",
		fmt.Sprintf(`document.querySelector('th.sorted-desc') && document.querySelector('#runs-table tr[data-run]').dataset.run === %q`, ok2.RunID))
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`th[data-sort="metric:accuracy"]`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 5*time.Second, "sorted by accuracy (ascending)",
		fmt.Sprintf(`document.querySelector('th.sorted-asc') && document.querySelector('#runs-table tr[data-run]').dataset.run === %q`, bad.RunID))
	screenshot(t, ctx, shots, "runs.png")
	setStatusFilter(t, ctx, "Failed")
	waitJS(t, ctx, 5*time.Second, "only the failed run", fmt.Sprintf(
		`(() => { const rows = document.querySelectorAll('#runs-table tr[data-run]'); return rows.length === 1 && rows[0].dataset.run === %q })()`, bad.RunID))
	setStatusFilter(t, ctx, "")
	waitJS(t, ctx, 5*time.Second, "all runs again", `document.querySelectorAll('#runs-table tr[data-run]').length === 3`)

	// a run: its charts have one point per logged step, other runs overlaid
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-run=%q] a.run-link`, ok2.RunID))), chromedp.WaitVisible(chromedp.CSS(`#charts svg.chart`))); err != nil {
		t.Fatal(err)
	}
	loss := `[...document.querySelectorAll('svg.chart')].find(s => s.dataset.metric === 'loss')`
	if n := evalInt(t, ctx, loss+`.querySelectorAll('g.self circle.pt').length`); n != 6 {
		t.Fatalf("loss chart of %s: %d points, want 6", ok2.RunID, n)
	}
	if n := evalInt(t, ctx, loss+`.querySelectorAll('g.series').length`); n != 3 {
		t.Fatalf("loss chart: %d runs overlaid, want 3", n)
	}
	if n := evalInt(t, ctx, loss+`.querySelector('g.series[data-run="`+ok1.RunID+`"]').querySelectorAll('circle.pt').length`); n != 4 {
		t.Fatalf("loss chart, overlaid %s: %d points, want 4", ok1.RunID, n)
	}
	// untrusted names and lines are text, not markup
	waitJS(t, ctx, 10*time.Second, "the log", `document.querySelector('#log').textContent.includes('done')`)
	if n := evalInt(t, ctx, `document.querySelectorAll('main img, main script, main i[onmouseover]').length`); n != 0 {
		t.Fatalf("%d elements made from a run's text", n)
	}
	waitJS(t, ctx, 5*time.Second, "the metric name shown as text",
		`[...document.querySelectorAll('.chart-box h3')].some(h => h.textContent === '<img src=x onerror=alert(1)>')`)
	waitJS(t, ctx, 5*time.Second, "the log line shown as text", `document.querySelector('#log').textContent.includes("<script>alert('log')</script>")`)
	waitJS(t, ctx, 5*time.Second, "parameters, timeline and files", `document.querySelector('#params').textContent.includes('train.py') &&
		[...document.querySelectorAll('#timeline .phase.done')].map(p => p.dataset.phase).join(',') === 'Queued,Running,Finalizing,Completed' && document.querySelectorAll('#outputs a').length === 2 &&
		document.querySelector('#snapshot').textContent.includes('train.py')`)
	screenshot(t, ctx, shots, "run.png")

	// a live log while the run writes it
	live := f.submit(t, "live", "40", "0.25")
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/#/run/"+live.RunID), chromedp.WaitVisible(chromedp.CSS(`#run-id`))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 30*time.Second, "the log to show the first steps while the run is active",
		`document.querySelector('#log-state').textContent === '(live)' && document.querySelector('#log').textContent.includes('step 2 ')`)
	partial := evalInt(t, ctx, `document.querySelector('#log').textContent.split('\n').filter(l => l.startsWith('step ')).length`)
	if partial >= 40 {
		t.Fatalf("the run had ended before the page followed it (%d steps shown)", partial)
	}
	screenshot(t, ctx, shots, "run-live.png")
	waitJS(t, ctx, 60*time.Second, "the log to follow to the end", `document.querySelector('#log').textContent.includes('done') &&
		document.querySelector('#run-head [data-status]').dataset.status === 'Completed' && document.querySelector('#log-state').textContent === ''`)
	if n := evalInt(t, ctx, `document.querySelector('#log').textContent.split('\n').filter(l => l.startsWith('step ')).length`); n != 40 {
		t.Fatalf("followed log: %d step lines, want 40 (each once)", n)
	}
	waitJS(t, ctx, 10*time.Second, "the chart with every point", `(() => { const s = `+loss+`; return s && s.querySelectorAll('g.self circle.pt').length === 40 })()`)
	screenshot(t, ctx, shots, "run-live-done.png")
}

// The server side of the view: read-only, no cache, loopback Host only,
// outputs served as attachments and never outside the run's outputs.
func TestWebViewHTTP(t *testing.T) {
	f := newFixture(t)
	r := f.finished(t, "exp", "3", "0")
	// a link out of the outputs directory, written as a run could
	outs := r.OutputsPath
	secret := filepath.Join(f.dir, "secret.txt")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(outs, "link.txt")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(outs, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newUI(f.e, f.ws, false))
	t.Cleanup(srv.Close)
	get := func(path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			if hdr[i] == "Host" {
				req.Host = hdr[i+1]
			} else {
				req.Header.Set(hdr[i], hdr[i+1])
			}
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		return res, string(b)
	}
	base := "/api/runs/" + r.RunID
	res, body := get(base + "/outputs/model.txt")
	if res.StatusCode != 200 || body != "weights 3\n" || res.Header.Get("Content-Type") != "application/octet-stream" ||
		res.Header.Get("Content-Disposition") != `attachment; filename=model.txt` || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("download: %d %q %v", res.StatusCode, body, res.Header)
	}
	res, body = get(base + "/outputs/" + "%3Ci%20onmouseover=alert(1)%3Ex.html")
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Disposition"), "attachment; filename=") ||
		res.Header.Get("Content-Type") != "application/octet-stream" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("html output: %d %q %v", res.StatusCode, body, res.Header)
	}
	for _, p := range []string{"link.txt", "fifo", "..%2F..%2F..%2Fsecret.txt", "../../../../secret.txt", "%2e%2e/%2e%2e/secret.txt", "%2Fetc%2Fpasswd", "nope"} {
		res, body := get(base + "/outputs/" + p)
		if res.StatusCode != 404 || strings.Contains(body, "secret\"") || body == "secret" {
			t.Errorf("outputs/%s: %d %q", p, res.StatusCode, body)
		}
	}
	if res, _ := get("/api/runs/..%2F..%2Fx/logs"); res.StatusCode != 404 {
		t.Errorf("bad run id: %d", res.StatusCode)
	}
	if res, _ := get("/api/runs", "Host", "attacker.example:80"); res.StatusCode != 403 {
		t.Errorf("foreign Host header: %d", res.StatusCode)
	}
	req, _ := http.NewRequest("POST", srv.URL+"/api/runs", nil)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 405 {
		t.Errorf("POST: %v %v", res, err)
	}
	res, body = get(base + "/logs?offset=0")
	if res.StatusCode != 200 || !strings.Contains(body, `"active": false`) || !strings.Contains(body, `step 2 \u003cscript\u003e`) {
		t.Errorf("logs: %d %s", res.StatusCode, body)
	}
	res, _ = get("/")
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || res.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("index headers: %v", res.Header)
	}
	if res, _ := get("/static/app.js"); res.StatusCode != 200 || !strings.Contains(res.Header.Get("Content-Type"), "javascript") {
		t.Errorf("app.js: %d %v", res.StatusCode, res.Header)
	}
}

// `aml ui` serves on loopback, and refuses another address without --public.
func TestUICommand(t *testing.T) {
	f := newFixture(t)
	f.finished(t, "exp", "2", "0")
	if r := aml(t, f.dir, "ui", "--listen", "0.0.0.0:0"); r.code != exitUsage || !strings.Contains(r.stderr, "not a loopback address") {
		t.Fatalf("non-loopback listen: exit %d %s", r.code, r.stderr)
	}
	cmd := exec.Command(amlBin, "ui", "--listen", "127.0.0.1:0")
	cmd.Dir = f.dir
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGTERM); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(line, "http://127.0.0.1:")
	if i < 0 {
		t.Fatalf("no address in %q", line)
	}
	url := strings.TrimSpace(line[i:])
	res, err := http.Get(url + "api/runs")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(b), `"experiment": "exp"`) {
		t.Fatalf("GET api/runs: %d %s", res.StatusCode, b)
	}
}

const sweepScript = `import math, os, sys, aml_run
lr = float(sys.argv[1])
for epoch in range(20):
    loss = math.exp(-lr * epoch) * 0.9 + 0.05
    aml_run.log("loss", loss, step=epoch)
    aml_run.log("accuracy", 1.0 - loss / 2, step=epoch)
    print("epoch %2d  loss %.4f  accuracy %.4f" % (epoch, loss, 1.0 - loss / 2), flush=True)
aml_run.log("lr", lr)
open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "model.json"), "w").write('{"lr": %s}' % lr)
`

// A sweep of three runs overlaid on one run's page (the screenshot in the
// README: AML_DOCS_SCREENSHOT=path writes it there too).
func TestWebViewSweepOverlay(t *testing.T) {
	f := newFixture(t)
	var last string
	for _, lr := range []string{"0.05", "0.15", "0.3"} {
		src := testutil.WriteFiles(t, t.TempDir(), map[string]string{"train.py": sweepScript})
		r, err := f.e.SubmitRun(context.Background(), engine.RunRequest{WorkspaceID: f.ws.ID, Experiment: "digits", SourceDirectory: src,
			Script: "train.py", Arguments: []string{lr}, ComputeTarget: engine.LocalTarget, RunConfigID: f.rc})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.e.WaitRun(context.Background(), r.ID); err != nil {
			t.Fatal(err)
		}
		last = r.RunID
	}
	srv := httptest.NewServer(newUI(f.e, f.ws, false))
	t.Cleanup(srv.Close)
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/#/run/"+last), chromedp.WaitVisible(chromedp.CSS(`#charts svg.chart`))); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"loss", "accuracy"} {
		js := fmt.Sprintf(`[...document.querySelectorAll('svg.chart')].find(s => s.dataset.metric === %q)`, m)
		if n := evalInt(t, ctx, js+`.querySelectorAll('g.series').length`); n != 3 {
			t.Fatalf("%s chart: %d runs, want 3", m, n)
		}
		if n := evalInt(t, ctx, js+`.querySelectorAll('circle.pt').length`); n != 60 {
			t.Fatalf("%s chart: %d points, want 60", m, n)
		}
	}
	waitJS(t, ctx, 10*time.Second, "the log", `document.querySelector('#log').textContent.includes('epoch 19')`)
	dir := artifacts(t)
	screenshot(t, ctx, dir, "run.png")
	if p := os.Getenv("AML_DOCS_SCREENSHOT"); p != "" {
		b, err := os.ReadFile(filepath.Join(dir, "run.png"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
