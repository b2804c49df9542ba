package provider_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/engine/store"
	"github.com/openaml/terraform-provider-aml/internal/engine/store/objstore"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
	"github.com/openaml/terraform-provider-aml/internal/testutil/postgres"
	s3test "github.com/openaml/terraform-provider-aml/internal/testutil/s3"
)

// providerMirror builds the provider from this tree into a filesystem mirror
// and returns a Terraform CLI configuration that installs it from there.
// (dev_overrides would do for plan and apply, but `terraform init`, which a
// backend needs, then still asks the registry for the provider.)
func providerMirror(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "mirror", "registry.terraform.io", "openaml", "aml", "0.0.1", "linux_amd64", "terraform-provider-aml_v0.0.1")
	buildProvider(t, bin)
	rc := filepath.Join(tmp, "cli.tfrc")
	cfg := fmt.Sprintf(`provider_installation {
  filesystem_mirror {
    path    = %q
    include = ["openaml/aml"]
  }
  direct {
    exclude = ["openaml/aml"]
  }
}
`, filepath.Join(tmp, "mirror"))
	if err := os.WriteFile(rc, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return rc
}

// sharedParts is a PostgreSQL (one database for Terraform's state, one for
// the workspaces) and an S3-compatible server with a bucket.
type sharedParts struct {
	pg      *postgres.Server
	s3      *s3test.Server
	stateDB string
	amlDB   string
	bucket  string
}

func startSharedParts(t *testing.T) *sharedParts {
	t.Helper()
	p := &sharedParts{pg: postgres.Start(t), s3: s3test.Start(t)}
	p.stateDB = p.pg.CreateDB(t, "tfstate")
	p.amlDB = p.pg.CreateDB(t, "aml")
	p.bucket = p.s3.Bucket(t)
	return p
}

func (p *sharedParts) objects(t *testing.T) objstore.Store {
	t.Helper()
	o, err := objstore.NewS3(context.Background(), p.s3.Config(p.bucket))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// openWorkspace opens the shared workspace as a third machine would.
func (p *sharedParts) openWorkspace(t *testing.T, name string) *store.Store {
	t.Helper()
	s, err := store.OpenShared(context.Background(), store.Shared{Postgres: p.amlDB, CacheRoot: t.TempDir(), Objects: p.objects(t)}, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// runner is one CI runner: its own checkout path, HOME and (empty) caches.
type runner struct {
	t    *testing.T
	name string
	dir  string
	env  []string
}

func newRunner(t *testing.T, name, base string, rc string, p *sharedParts, files map[string]string) *runner {
	t.Helper()
	home := filepath.Join(base, "home")
	dir := filepath.Join(base, "checkout", "ml-repo")
	for _, d := range []string{home, dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WriteFiles(t, dir, files)
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "HOME", k == "XDG_CACHE_HOME", k == "TF_CLI_CONFIG_FILE", k == "TF_DATA_DIR", strings.HasPrefix(k, "TF_VAR_"),
			strings.HasPrefix(k, "AWS_"), strings.HasPrefix(k, "PG"), strings.HasPrefix(k, "TF_LOG"):
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+home, "TF_CLI_CONFIG_FILE="+rc, "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1",
		"TF_VAR_pg="+p.amlDB, "TF_VAR_bucket="+p.bucket, "TF_VAR_s3_endpoint="+p.s3.Endpoint(), "TF_VAR_python="+pythonBin,
		// The bucket's credentials come from the usual AWS environment.
		"AWS_ACCESS_KEY_ID="+p.s3.AccessKey, "AWS_SECRET_ACCESS_KEY="+p.s3.SecretKey, "AWS_REGION="+p.s3.Region, "AWS_EC2_METADATA_DISABLED=true")
	return &runner{t: t, name: name, dir: dir, env: env}
}

// tf runs terraform in the runner's checkout and returns its output and exit code.
func (r *runner) tf(args ...string) (string, int) {
	r.t.Helper()
	cmd := exec.Command(terraformBin, append([]string{args[0], "-no-color"}, args[1:]...)...)
	cmd.Dir = r.dir
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			r.t.Fatalf("%s: terraform %v: %v", r.name, args, err)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

func (r *runner) ok(args ...string) string {
	r.t.Helper()
	out, code := r.tf(args...)
	if code != 0 {
		r.t.Fatalf("%s: terraform %s exited %d:\n%s", r.name, strings.Join(args, " "), code, out)
	}
	return out
}

func (r *runner) outputs() map[string]any {
	r.t.Helper()
	var raw map[string]struct{ Value any }
	if err := json.Unmarshal([]byte(r.ok("output", "-json")), &raw); err != nil {
		r.t.Fatal(err)
	}
	out := map[string]any{}
	for k, v := range raw {
		out[k] = v.Value
	}
	return out
}

// stateAttrOf reads an attribute of a resource in the runner's view of state.
func (r *runner) stateAttrOf(address, attr string) any {
	r.t.Helper()
	var st struct {
		Values struct {
			RootModule struct {
				Resources []struct {
					Address string
					Values  map[string]any
				}
			} `json:"root_module"`
		}
	}
	if err := json.Unmarshal([]byte(r.ok("show", "-json")), &st); err != nil {
		r.t.Fatal(err)
	}
	for _, res := range st.Values.RootModule.Resources {
		if res.Address == address {
			return res.Values[attr]
		}
	}
	r.t.Fatalf("%s: no %s in state", r.name, address)
	return nil
}

func (r *runner) write(rel, body string) {
	r.t.Helper()
	testutil.WriteFiles(r.t, r.dir, map[string]string{rel: body})
}

func sharedConfig(experiment string, count int) string {
	return fmt.Sprintf(`terraform {
  backend "pg" {}
  required_providers {
    aml = { source = "openaml/aml" }
  }
}

variable "pg" {
  type      = string
  sensitive = true
}
variable "bucket" { type = string }
variable "s3_endpoint" { type = string }
variable "python" { type = string }

provider "aml" {
  shared_backend {
    postgres = var.pg
    s3 {
      bucket   = var.bucket
      endpoint = var.s3_endpoint
    }
  }
}

resource "aml_workspace" "ws" {
  name    = "team"
  backend = "shared"
}

resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "py"
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = var.python
    }
  }
}

resource "aml_experiment_run" "train" {
  count                = %d
  workspace_id         = aml_workspace.ws.id
  experiment_name      = %q
  source_directory     = "${path.module}/src"
  script               = "train.py"
  arguments            = [tostring(count.index)]
  run_configuration_id = aml_run_configuration.py.id
}

# Reads the run, and its files, through the backend on whichever machine plans.
data "aml_run" "first" {
  workspace_id = aml_workspace.ws.id
  run_id       = aml_experiment_run.train[0].run_id
}

output "run_ids" { value = aml_experiment_run.train[*].run_id }
output "accuracy" { value = aml_experiment_run.train[0].metrics["accuracy"] }
output "outputs_uri" { value = aml_experiment_run.train[0].outputs_uri }
`, count, experiment)
}

func trainWith(accuracy string) string {
	return strings.Replace(trainScript, `aml_run.log("accuracy", 0.93)`, `aml_run.log("accuracy", `+accuracy+`)`, 1)
}

// Two CI runners share a workspace (PostgreSQL + bucket) and Terraform's
// state (Terraform's own pg backend on the same server): different checkout
// paths, HOMEs and empty caches.
func TestAccSharedBackendTwoRunners(t *testing.T) {
	testAccPreCheck(t)
	p := startSharedParts(t)
	rc := providerMirror(t)
	base := t.TempDir()
	files := map[string]string{"main.tf": sharedConfig("train", 1), "src/train.py": trainScript}
	a := newRunner(t, "runner A", filepath.Join(base, "a"), rc, p, files)
	b := newRunner(t, "runner B", filepath.Join(base, "b", "other", "deeper"), rc, p, files)
	initArgs := []string{"init", "-input=false", "-backend-config=conn_str=" + p.stateDB}
	obj := p.objects(t)

	// A trains.
	a.ok(initArgs...)
	a.ok("apply", "-auto-approve", "-input=false")
	outA := a.outputs()
	runs := outA["run_ids"].([]any)
	run1 := runs[0].(string)
	if outA["accuracy"] != 0.93 {
		t.Fatalf("accuracy = %v", outA["accuracy"])
	}
	ws := p.openWorkspace(t, "team")
	if uri := outA["outputs_uri"].(string); uri != obj.URI(ws.SharedID()+"/runs/"+run1+"/outputs/") {
		t.Errorf("outputs_uri = %q", uri)
	}
	if _, err := obj.Stat(context.Background(), ws.SharedID()+"/runs/"+run1+"/outputs/model.txt"); err != nil {
		t.Fatalf("A's output is not in the bucket: %v", err)
	}
	if strings.Contains(a.ok("show", "-json"), a.dir) {
		t.Error("state holds runner A's checkout path")
	}

	// B plans: nothing to do; it reads A's metrics and outputs.
	b.ok(initArgs...)
	if out, code := b.tf("plan", "-detailed-exitcode", "-input=false"); code != 0 {
		t.Fatalf("B's plan of A's unchanged configuration (exit %d):\n%s", code, out)
	}
	b.ok("apply", "-refresh-only", "-auto-approve", "-input=false")
	if got := b.outputs(); got["accuracy"] != 0.93 || got["run_ids"].([]any)[0] != run1 {
		t.Errorf("B reads %v", got)
	}
	outPath := b.stateAttrOf("aml_experiment_run.train[0]", "outputs_path").(string)
	if !strings.HasPrefix(outPath, filepath.Join(base, "b")) {
		t.Errorf("B's outputs_path %q is not in B's cache", outPath)
	}
	if got, err := os.ReadFile(filepath.Join(outPath, "model.txt")); err != nil || string(got) != "weights" {
		t.Errorf("B's copy of A's output: %q, %v", got, err)
	}
	if uri := b.stateAttrOf("data.aml_run.first", "outputs_uri"); uri != outA["outputs_uri"] {
		t.Errorf("data.aml_run on B: outputs_uri %v, want %v", uri, outA["outputs_uri"])
	}
	if files := b.stateAttrOf("data.aml_run.first", "output_files"); fmt.Sprint(files) != "[model.txt]" {
		t.Errorf("data.aml_run on B: output_files %v", files)
	}

	// B changes train.py: the run is replaced, runs there, outputs in the bucket.
	b.write("src/train.py", trainWith("0.95"))
	out, code := b.tf("plan", "-detailed-exitcode", "-input=false")
	if code != 2 || !strings.Contains(out, "must be replaced") {
		t.Fatalf("B's plan after editing train.py (exit %d):\n%s", code, out)
	}
	b.ok("apply", "-auto-approve", "-input=false")
	run2 := b.outputs()["run_ids"].([]any)[0].(string)
	if run2 == run1 {
		t.Fatal("B's apply did not re-run")
	}
	if _, err := obj.Stat(context.Background(), ws.SharedID()+"/runs/"+run2+"/outputs/model.txt"); err != nil {
		t.Fatalf("B's output is not in the bucket: %v", err)
	}

	// A (after pulling B's change) refreshes and sees B's run.
	a.write("src/train.py", trainWith("0.95"))
	a.ok("apply", "-refresh-only", "-auto-approve", "-input=false")
	if got := a.outputs(); got["run_ids"].([]any)[0] != run2 || got["accuracy"] != 0.95 {
		t.Errorf("A sees %v, want B's run %s", got, run2)
	}
	if out, code := a.tf("plan", "-detailed-exitcode", "-input=false"); code != 0 {
		t.Fatalf("A's plan after B's apply (exit %d):\n%s", code, out)
	}

	// A plan made on A, applied on B.
	a.write("src/train.py", trainWith("0.97"))
	b.write("src/train.py", trainWith("0.97"))
	a.ok("plan", "-input=false", "-out=ci.tfplan")
	plan, err := os.ReadFile(filepath.Join(a.dir, "ci.tfplan"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "ci.tfplan"), plan, 0o644); err != nil {
		t.Fatal(err)
	}
	b.ok("apply", "-input=false", "ci.tfplan")
	got := b.outputs()
	run3 := got["run_ids"].([]any)[0].(string)
	if run3 == run2 || got["accuracy"] != 0.97 {
		t.Errorf("after A's plan applied on B: %v", got)
	}
	if n, err := ws.CountRuns(context.Background()); err != nil || n != 3 {
		t.Errorf("workspace holds %d runs (%v), want 3", n, err)
	}
}

// Two runners applying at once against one workspace (each with its own
// Terraform state): every run is recorded once and completes.
func TestAccSharedBackendConcurrentApplies(t *testing.T) {
	testAccPreCheck(t)
	p := startSharedParts(t)
	rc := providerMirror(t)
	base := t.TempDir()
	var rs []*runner
	for _, name := range []string{"c", "d"} {
		r := newRunner(t, "runner "+name, filepath.Join(base, name), rc, p, map[string]string{"main.tf": sharedConfig("exp-"+name, 3), "src/train.py": trainScript})
		r.ok("init", "-input=false", "-backend-config=conn_str="+p.stateDB, "-backend-config=schema_name=state_"+name)
		// One after the other, the workspace and run configuration (Terraform's
		// pg backend takes one global lock to create a state); then the runs
		// of both at once.
		r.ok("apply", "-auto-approve", "-input=false", "-target=aml_run_configuration.py")
		rs = append(rs, r)
	}
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// -lock-timeout: Terraform's pg backend takes one database-wide
			// advisory lock (-1) for a moment on every state lock, also for
			// states in other schemas, so two runners' locks can meet; a team's
			// CI sets it for the same reason.
			if out, code := r.tf("apply", "-auto-approve", "-input=false", "-lock-timeout=60s"); code != 0 {
				t.Errorf("%s: apply exited %d:\n%s", r.name, code, out)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	ws := p.openWorkspace(t, "team")
	if n, err := ws.CountRuns(context.Background()); err != nil || n != 6 {
		t.Errorf("workspace holds %d runs (%v), want 6", n, err)
	}
	for _, r := range rs {
		ids := r.outputs()["run_ids"].([]any)
		if len(ids) != 3 {
			t.Fatalf("%s: run ids %v", r.name, ids)
		}
		for _, id := range ids {
			rec, err := ws.GetRun(context.Background(), id.(string))
			if err != nil || rec.Status != run.Completed || rec.Metrics["accuracy"] != 0.93 {
				t.Errorf("%s: run %v = %+v, %v", r.name, id, rec, err)
			}
		}
	}
}

// A server of the shared backend stopped during an apply: the error names
// which one, no half-written run record is left, and the next apply once it
// is back succeeds without running anything twice.
func TestAccSharedBackendServerDown(t *testing.T) {
	testAccPreCheck(t)
	p := startSharedParts(t)
	rc := providerMirror(t)
	// Terraform's own state stays local here: the fault is the workspace's.
	cfg := strings.Replace(sharedConfig("exp", 1), `backend "pg" {}`, `backend "local" {}`, 1)
	slow := "import time\ntime.sleep(4)\n" + trainScript
	r := newRunner(t, "runner", t.TempDir(), rc, p, map[string]string{"main.tf": cfg, "src/train.py": slow})
	r.ok("init", "-input=false")

	t.Run("S3 stopped", func(t *testing.T) {
		p.s3.Stop()
		out, code := r.tf("apply", "-auto-approve", "-input=false")
		p.s3.Restart()
		t.Logf("apply with S3 stopped:\n%s", errorBlock(out))
		if code == 0 {
			t.Fatalf("apply with the bucket's server stopped succeeded:\n%s", out)
		}
		for _, want := range []string{"S3 bucket", p.bucket, p.s3.Endpoint()} {
			if !strings.Contains(out, want) {
				t.Errorf("error does not name %s:\n%s", want, out)
			}
		}
		if strings.Contains(out, p.s3.SecretKey) || strings.Contains(out, p.pg.Password) {
			t.Error("a secret is in Terraform's output")
		}
	})
	t.Run("PostgreSQL stopped while the run goes", func(t *testing.T) {
		done := make(chan struct{})
		var out string
		var code int
		go func() { out, code = r.tf("apply", "-auto-approve", "-input=false"); close(done) }()
		// Wait for the run to be recorded as started (its handle kept), then
		// stop the server while the apply waits for it.
		ws := p.openWorkspace(t, "team")
		testutil.WaitFor(t, 60*time.Second, "a started run", func() bool {
			ids, _ := ws.ActiveRunIDs(context.Background())
			for _, id := range ids {
				if rec, err := ws.GetRun(context.Background(), id); err == nil && len(rec.Handle) > 0 {
					return true
				}
			}
			return false
		})
		p.pg.Stop()
		<-done
		p.pg.Restart()
		t.Logf("apply with PostgreSQL stopped:\n%s", errorBlock(out))
		if code == 0 {
			t.Fatalf("apply with PostgreSQL stopped succeeded:\n%s", out)
		}
		if !strings.Contains(out, "PostgreSQL at 127.0.0.1:"+fmt.Sprint(p.pg.Port)) {
			t.Errorf("error does not name the PostgreSQL server:\n%s", out)
		}
		if strings.Contains(out, p.pg.Password) {
			t.Error("the PostgreSQL password is in Terraform's output")
		}
	})
	r.ok("apply", "-auto-approve", "-input=false")
	// One run completed: the S3 failure left no record, and the run the
	// PostgreSQL failure interrupted went on and was adopted by this apply.
	ws2 := p.openWorkspace(t, "team")
	ctx := context.Background()
	if ids, err := ws2.ActiveRunIDs(ctx); err != nil || len(ids) != 0 {
		t.Errorf("active runs left: %v, %v", ids, err)
	}
	completed := 0
	n, _ := ws2.CountRuns(ctx)
	recs, err := ws2.ListRuns(ctx, store.RunFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		switch {
		case rec.Status == run.Completed:
			completed++
		case rec.Status == run.Failed && rec.FailureReason == run.ReasonLost:
		default:
			t.Errorf("run %s left %s (%s): %s", rec.ID, rec.Status, rec.FailureReason, rec.Error)
		}
	}
	if completed != 1 || n != 1 {
		t.Errorf("%d runs, %d completed; want the one run, completed (adopted, not run twice)", n, completed)
	}
	if out := r.ok("apply", "-auto-approve", "-input=false"); !strings.Contains(out, "No changes") {
		t.Errorf("apply after recovery is not a no-op:\n%s", out)
	}
	if got := r.outputs(); got["accuracy"] != 0.93 {
		t.Errorf("after recovery: %v", got)
	}
}

// errorBlock is the diagnostics part of Terraform's output.
func errorBlock(out string) string {
	if i := strings.Index(out, "Error: "); i >= 0 {
		return out[i:]
	}
	return out
}

// Bad input is refused naming the attribute and what is valid, and no secret
// of the configuration appears in Terraform's output.
func TestAccSharedBackend_badInput(t *testing.T) {
	testAccPreCheck(t)
	pg := postgres.Start(t)
	rc := providerMirror(t)
	const secret = "do-not-print-this-secret"
	wrongPW := strings.Replace(pg.URL("postgres"), pg.Password, secret, 1)
	cases := []struct {
		name, provider, workspace string
		want                      []string
	}{
		{"half S3 credentials", `shared_backend {
    postgres = "` + pg.URL("postgres") + `"
    s3 {
      bucket        = "b"
      access_key_id = "AKIA"
    }
  }`, `backend = "shared"`, []string{"shared_backend.s3.access_key_id and secret_access_key go together"}},
		{"endpoint not a URL", `shared_backend {
    s3 {
      bucket   = "b"
      endpoint = "minio:9000"
    }
  }`, `backend = "shared"`, []string{`shared_backend.s3.endpoint "minio:9000" is not a URL`, "http://host:port"}},
		{"shared without shared_backend", ``, `backend = "shared"`, []string{"has no shared_backend block"}},
		{"unknown backend", ``, `backend = "cloud"`, []string{"backend", "embedded", "shared"}},
		{"storage_path with shared", `shared_backend {
    postgres = "` + pg.URL("postgres") + `"
  }`, "backend = \"shared\"\n  storage_path = \"wsdir\"", []string{`storage_path = "wsdir"`, "Remove storage_path"}},
		{"wrong password", `shared_backend {
    postgres = "` + wrongPW + `"
    secrets_key = "` + secret + `"
  }`, `backend = "shared"`, []string{fmt.Sprintf("PostgreSQL at 127.0.0.1:%d/postgres", pg.Port), "password authentication failed"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := fmt.Sprintf(`terraform {
  required_providers {
    aml = { source = "openaml/aml" }
  }
}
provider "aml" {
  %s
}
resource "aml_workspace" "ws" {
  name = "bad"
  %s
}
`, c.provider, c.workspace)
			r := newRunner(t, c.name, t.TempDir(), rc, &sharedParts{pg: pg, s3: &s3test.Server{}}, map[string]string{"main.tf": cfg})
			r.ok("init", "-input=false")
			out, code := r.tf("apply", "-auto-approve", "-input=false")
			if code == 0 {
				t.Fatalf("apply succeeded:\n%s", out)
			}
			flat := strings.Join(strings.Fields(out), " ")
			for _, w := range c.want {
				if !strings.Contains(flat, strings.Join(strings.Fields(w), " ")) {
					t.Errorf("output does not say %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, secret) || strings.Contains(out, pg.Password) {
				t.Errorf("a secret is in Terraform's output:\n%s", out)
			}
		})
	}
}
