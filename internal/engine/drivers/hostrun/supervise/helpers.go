package supervise

import (
	"embed"
	"io/fs"
	"os"
	"path/filepath"
)

// pylib is what goes on a run's PYTHONPATH: the aml_run helper and a small
// azureml.core (Run.get_context() and the rest a v1 training script uses),
// which places itself after any real azureml.core the run's Python has (see
// pylib/azureml/__init__.py), so a real install is never shadowed.
//
//go:embed all:pylib
var pylib embed.FS

// writeHelpers writes pylib into dir.
func WriteHelpers(dir string) error {
	return fs.WalkDir(pylib, "pylib", func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("pylib", filepath.FromSlash(p))
		dst := filepath.Join(dir, rel)
		if de.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := pylib.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
}
