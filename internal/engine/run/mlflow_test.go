package run

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The store is the script's: what is malformed, hostile or deleted is
// skipped, the rest is read, in the order the runs started.
func TestReadMLflowStore(t *testing.T) {
	root := t.TempDir()
	store := filepath.Join(root, ".aml", "mlruns")
	outside := t.TempDir()
	write(t, filepath.Join(outside, "secret"), "1 42 0\n")

	second := filepath.Join(store, "1", "bbb")
	write(t, filepath.Join(second, "meta.yaml"), "run_id: bbb\nstart_time: 2000\nlifecycle_stage: active\n")
	write(t, filepath.Join(second, "metrics", "loss"), "2000 0.1 5\n")
	write(t, filepath.Join(second, "params", "lr"), "0.01")

	first := filepath.Join(store, "1", "aaa")
	write(t, filepath.Join(first, "meta.yaml"), "artifact_uri: file:///x\nrun_id: aaa\nstart_time: 1000\nlifecycle_stage: active\n")
	write(t, filepath.Join(first, "metrics", "loss"), "1000 0.9 0\n1001 nan 1\nnot a line\n1002 0.5 2\n")
	write(t, filepath.Join(first, "metrics", "f1", "macro"), "1000 0.7 0\n")
	write(t, filepath.Join(first, "params", "lr"), "0.1")
	write(t, filepath.Join(first, "tags", "team"), "vision")
	write(t, filepath.Join(first, "tags", "mlflow.user"), "root")
	write(t, filepath.Join(first, "artifacts", "model.txt"), "m")
	if err := syscall.Mkfifo(filepath.Join(first, "metrics", "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(first, "metrics", "leak")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(first, "params", "linkdir")); err != nil {
		t.Fatal(err)
	}

	deleted := filepath.Join(store, "1", "ccc")
	write(t, filepath.Join(deleted, "meta.yaml"), "run_id: ccc\nstart_time: 1500\nlifecycle_stage: deleted\n")
	write(t, filepath.Join(deleted, "metrics", "loss"), "1500 99 0\n")
	// A run whose directory is a link out is not read.
	if err := os.Symlink(outside, filepath.Join(store, "1", "ddd")); err != nil {
		t.Fatal(err)
	}

	d, err := ReadMLflowStore(root, store)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range d.Metrics {
		got = append(got, m.Name)
	}
	last := LastValues(d.Metrics)
	if last["loss"] != 0.1 || last["f1/macro"] != 0.7 || len(last) != 2 {
		t.Errorf("metrics = %+v", d.Metrics)
	}
	if len(d.Metrics) != 4 || d.Metrics[0].Time != 1 || d.Metrics[3].Step == nil || *d.Metrics[3].Step != 5 {
		t.Errorf("metrics in order = %+v", d.Metrics)
	}
	// nan and the malformed line; the FIFO and the link out are not files
	// of the store, never opened.
	if d.Dropped != 2 {
		t.Errorf("dropped = %d, want 2 (%v)", d.Dropped, d.Warnings)
	}
	if d.Params.Values["lr"] != "0.01" || len(d.Params.Values) != 1 {
		t.Errorf("params = %v (the later run's value wins)", d.Params.Values)
	}
	if d.Tags.Values["team"] != "vision" || len(d.Tags.Values) != 1 {
		t.Errorf("tags = %v", d.Tags.Values)
	}
	if len(d.ArtifactDirs) != 1 || d.ArtifactDirs[0] != filepath.Join(first, "artifacts") {
		t.Errorf("artifact dirs = %v", d.ArtifactDirs)
	}

	// No store: nothing, no error.
	if d, err := ReadMLflowStore(root, filepath.Join(root, "none")); err != nil || len(d.Metrics) != 0 {
		t.Errorf("missing store: %+v %v", d, err)
	}
}

func TestKeyValuesBounds(t *testing.T) {
	var kv KeyValues
	kv.Set("", "x")
	kv.Set(string(make([]byte, MaxKeyBytes+1)), "x")
	kv.Set("k", string(make([]byte, MaxValueBytes+10)))
	kv.Set("esc", "a\x1b[31mb")
	if kv.Dropped != 2 || len(kv.Values["k"]) != MaxValueBytes || kv.Values["esc"] != "ab" {
		t.Errorf("kv = %d %d %q", kv.Dropped, len(kv.Values["k"]), kv.Values["esc"])
	}
	for i := 0; i < MaxKeyValues+5; i++ {
		kv.Set(string(rune('a'+i%26))+string(rune(i)), "v")
	}
	if len(kv.Values) != MaxKeyValues {
		t.Errorf("%d values kept", len(kv.Values))
	}
}
