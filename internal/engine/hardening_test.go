package engine_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openaml/terraform-provider-aml/internal/engine"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
)

// A training script is untrusted input. Whatever it leaves where the engine
// reads results, the run ends, what can be read is kept, and the message says
// what could not.
func TestHostileRunOutput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, script string
		metrics      map[string]float64
		message      []string
	}{
		{
			name: "metrics file replaced by a FIFO",
			script: `import os
os.remove(os.environ["AML_METRICS_FILE"]) if os.path.exists(os.environ["AML_METRICS_FILE"]) else None
os.mkfifo(os.environ["AML_METRICS_FILE"])
open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "model.txt"), "w").write("m")
print("trained")
`,
			message: []string{"metrics not read", "FIFO"},
		},
		{
			name: "metrics file a link to /dev/urandom",
			script: `import os
os.symlink("/dev/urandom", os.environ["AML_METRICS_FILE"])
print("trained")
`,
			message: []string{"metrics not read", "link leaves the run directory"},
		},
		{
			name: "one line over 1 MB among good ones, a null and a NaN",
			script: `import os, aml_run
aml_run.log("accuracy", 0.5)
with open(os.environ["AML_METRICS_FILE"], "a") as f:
    f.write('{"name":"junk","value":1,"pad":"' + "x" * 1200000 + '"}\n')
    f.write('{"name":"loss","value":null}\n')
aml_run.log("loss", float("nan"))
aml_run.log("accuracy", 0.93)
print("trained")
`,
			metrics: map[string]float64{"accuracy": 0.93},
			message: []string{"3 metrics line(s) dropped"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			te := setup(t, nil)
			src := writeSource(t, map[string]string{"train.py": tc.script})
			sub := te.submit(t, te.request(src, "train.py"))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, err := te.e.WaitRun(ctx, sub.ID)
			if err != nil {
				t.Fatalf("WaitRun: %v", err)
			}
			if r.Status != run.Completed || !strings.Contains(r.LogTail, "trained") {
				t.Fatalf("run %s: %s %q, log %q", r.RunID, r.Status, r.Message, r.LogTail)
			}
			if len(r.Metrics) != len(tc.metrics) {
				t.Errorf("metrics %v, want %v", r.Metrics, tc.metrics)
			}
			for k, v := range tc.metrics {
				if r.Metrics[k] != v {
					t.Errorf("metric %s = %v, want %v", k, r.Metrics[k], v)
				}
			}
			for _, want := range tc.message {
				if !strings.Contains(r.Message, want) {
					t.Errorf("message %q lacks %q", r.Message, want)
				}
			}
		})
	}
}

// The log a failed run quotes in the apply's error reaches the operator's
// terminal: no escape sequence of the script's may survive into it.
func TestFailedRunLogTailHasNoEscapes(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	src := writeSource(t, map[string]string{"train.py": `import sys
print("\x1b]52;c;ZXZpbA==\x07clipboard \x1b]0;title\x07title \x1b[2Jclear \x1b[31mred\x1b[0m")
sys.exit(4)
`})
	sub := te.submit(t, te.request(src, "train.py"))
	r, err := waitRun(t, te.e, sub.ID, 30*time.Second)
	if err == nil || r.Status != run.Failed {
		t.Fatalf("run %+v, %v; want Failed", r, err)
	}
	for _, s := range []string{err.Error(), r.LogTail, r.Message} {
		if strings.ContainsAny(s, "\x1b\x07") {
			t.Errorf("escape sequences reach the operator: %q", s)
		}
	}
	if !strings.Contains(r.LogTail, "clipboard title clear red") {
		t.Errorf("log tail %q lost the text around the sequences", r.LogTail)
	}
}

// The environment Terraform runs with may carry secrets the configuration
// never names: a run inherits them, but nothing in the workspace records them,
// and what the workspace does record is the owner's alone.
func TestInheritedEnvironmentIsNotWrittenDown(t *testing.T) {
	const secret = "s3cr3t-never-in-the-config"
	t.Setenv("AML_TEST_INHERITED_SECRET", secret)
	te := setup(t, nil)
	src := writeSource(t, map[string]string{"train.py": `import os
import hashlib
print("inherited=" + hashlib.sha256(os.environ.get("AML_TEST_INHERITED_SECRET", "").encode()).hexdigest())
`})
	sub := te.submit(t, te.request(src, "train.py"))
	r, err := waitRun(t, te.e, sub.ID, 30*time.Second)
	if err != nil || !strings.Contains(r.LogTail, fmt.Sprintf("inherited=%x", sha256.Sum256([]byte(secret)))) {
		t.Fatalf("the run did not inherit the variable: %v %q", err, r.LogTail)
	}
	err = filepath.WalkDir(te.wsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, rerr := os.ReadFile(p)
		if rerr == nil && bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the inherited secret", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{
		te.wsDir:                                                0o700,
		filepath.Join(te.wsDir, "workspace.db"):                 0o600,
		filepath.Join(te.wsDir, "workspace.db-wal"):             0o600,
		filepath.Join(r.OutputsPath, "..", ".aml"):              0o700,
		filepath.Join(r.OutputsPath, "..", ".aml", "spec.json"): 0o600,
	} {
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s has mode %o, want %o", p, got, want)
		}
	}
}

// Ctrl-C under terraform apply reaches the provider as a canceled context (not
// a deadline): the run is canceled and says it was interrupted, not timed out.
func TestWaitRunInterruptedCancels(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	src := writeSource(t, map[string]string{"sleep.py": pidScript + "time.sleep(30)\n"})
	sub := te.submit(t, te.request(src, "sleep.py"))
	pid := readPID(t, sub)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	r, err := te.e.WaitRun(ctx, sub.ID)
	if err == nil || !strings.Contains(err.Error(), "interrupted while waiting for run") || strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v", err)
	}
	if r.Status != run.Canceled || r.FailureReason != run.ReasonCanceled {
		t.Fatalf("run = %s/%s, want Canceled/canceled", r.Status, r.FailureReason)
	}
	assertGone(t, pid)
}

func TestCheckProgram(t *testing.T) {
	for _, tc := range []struct {
		name    string
		script  string
		command []string
		args    []string
		vars    map[string]string
		attr    string
	}{
		{"NUL in an argument", "train.py", nil, []string{"ok", "a\x00b"}, nil, "arguments[1]"},
		{"NUL in the command", "", []string{"python3", "x\x00"}, nil, nil, "command[1]"},
		{"argument over MAX_ARG_STRLEN", "train.py", nil, []string{strings.Repeat("x", 200<<10)}, nil, "arguments[0]"},
		{"too much in total", "train.py", nil, slices.Repeat([]string{strings.Repeat("y", 100<<10)}, 12), nil, "arguments"},
		{"bad variable name", "train.py", nil, nil, map[string]string{"A=B": "1"}, "environment_variables"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := engine.CheckProgram(tc.script, tc.command, tc.args, tc.vars)
			if fe := fieldErr(t, err); fe.Attr != tc.attr {
				t.Fatalf("attr %q (%v), want %q", fe.Attr, err, tc.attr)
			}
		})
	}
	if err := engine.CheckProgram("train.py", nil, []string{"--lr", "0.1"}, map[string]string{"EPOCHS": "3"}); err != nil {
		t.Fatalf("a normal program: %v", err)
	}
}

// A failure's Python traceback is in the error even when the log goes on for
// longer than the tail after it (a framework's shutdown logging, here atexit).
func TestFailureCarriesTraceback(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	src := writeSource(t, map[string]string{"train.py": `import atexit
atexit.register(lambda: print("\n".join("shutdown noise %d" % i for i in range(120))))
def fit():
    raise ValueError("bad labels")
fit()
`})
	sub := te.submit(t, te.request(src, "train.py"))
	r, err := waitRun(t, te.e, sub.ID, 30*time.Second)
	if err == nil || r.Status != run.Failed {
		t.Fatalf("run %+v, %v; want Failed", r, err)
	}
	if strings.Contains(r.LogTail, "ValueError") {
		t.Fatalf("the traceback is still in the tail; the test needs more noise:\n%s", r.LogTail)
	}
	if !strings.Contains(err.Error(), "Python traceback") || !strings.Contains(err.Error(), `in fit`) || !strings.Contains(err.Error(), "ValueError: bad labels") {
		t.Fatalf("the error lacks the traceback:\n%v", err)
	}
}

// A run's record keeps where its results are relative to the workspace: a
// workspace moved to another path still finds them.
func TestRecordPathsFollowAMovedWorkspace(t *testing.T) {
	t.Parallel()
	te := setup(t, nil)
	src := writeSource(t, map[string]string{"train.py": "import os\nopen(os.path.join(os.environ['AML_OUTPUTS_DIR'], 'm.txt'), 'w').write('x')\n"})
	sub := te.submit(t, te.request(src, "train.py"))
	if _, err := waitRun(t, te.e, sub.ID, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	te.e.Close()
	moved := filepath.Join(t.TempDir(), "moved")
	if err := os.Rename(te.wsDir, moved); err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, t.TempDir())
	r, err := e.ReadRun(context.Background(), moved+"/runs/"+sub.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.OutputsPath, moved) || !strings.HasPrefix(r.LogPath, moved) {
		t.Fatalf("paths %s, %s do not follow the workspace to %s", r.OutputsPath, r.LogPath, moved)
	}
	if _, err := os.Stat(filepath.Join(r.OutputsPath, "m.txt")); err != nil {
		t.Fatal(err)
	}
}
