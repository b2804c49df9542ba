// Package wheel writes tiny pure-Python wheels for tests, so environment builds
// can be tested offline with a find_links directory and --no-index.
package wheel

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Write puts name==version (importable as the module name with '-' as '_',
// exposing __version__) into dir, with optional Requires-Dist lines.
func Write(dir, name, version string, requires ...string) error {
	mod := strings.ReplaceAll(name, "-", "_")
	distInfo := fmt.Sprintf("%s-%s.dist-info", mod, version)
	meta := fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\n", name, version)
	for _, r := range requires {
		meta += "Requires-Dist: " + r + "\n"
	}
	files := []struct{ name, body string }{
		{mod + "/__init__.py", fmt.Sprintf("__version__ = %q\n", version)},
		{distInfo + "/METADATA", meta},
		{distInfo + "/WHEEL", "Wheel-Version: 1.0\nGenerator: aml-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
	}
	var record strings.Builder
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		w, err := zw.Create(f.name)
		if err != nil {
			return err
		}
		if _, err := w.Write([]byte(f.body)); err != nil {
			return err
		}
		sum := sha256.Sum256([]byte(f.body))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", f.name, base64.RawURLEncoding.EncodeToString(sum[:]), len(f.body))
	}
	fmt.Fprintf(&record, "%s/RECORD,,\n", distInfo)
	w, err := zw.Create(distInfo + "/RECORD")
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(record.String())); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%s-py3-none-any.whl", mod, version)), buf.Bytes(), 0o644)
}

// Dir returns a find_links directory with tinypkg 1.0 and 2.0 and otherpkg 1.0
// (which requires tinypkg==1.0, for conflict tests).
func Dir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, w := range []struct {
		name, version string
		requires      []string
	}{{"tinypkg", "1.0", nil}, {"tinypkg", "2.0", nil}, {"otherpkg", "1.0", []string{"tinypkg==1.0"}}} {
		if err := Write(dir, w.name, w.version, w.requires...); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Real wheels that scripts/install-pywheels.sh downloads for this machine's
// python3 (AML_TEST_WHEELS, default /opt/aml-wheels).
const (
	MLflowSkinny = "mlflow-skinny==3.17.2"
	AzuremlCore  = "azureml-core==1.61.0.post4"
)

// Real returns the directory of real wheels, or skips the test with the reason.
func Real(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("AML_TEST_WHEELS")
	if dir == "" {
		dir = "/opt/aml-wheels"
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "mlflow_skinny-*.whl")); len(m) == 0 {
		t.Skipf("no mlflow-skinny wheel in %s (run scripts/install-pywheels.sh)", dir)
	}
	return dir
}
