package hostrun

import (
	"archive/zip"
	"bytes"
	"embed"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"
)

// pylib is what goes on a run's PYTHONPATH: the aml_run helper and a small
// azureml.core (Run.get_context() and the rest a v1 training script uses),
// which places itself after any real azureml.core the run's Python has (see
// pylib/azureml/__init__.py), so a real install is never shadowed.
//
//go:embed all:pylib
var pylib embed.FS

// WriteHelpers writes pylib to path as one zip archive (stored, not
// compressed), which Python imports from when it is on PYTHONPATH (zipimport,
// in every Python 3). One file per run instead of seven files and directories:
// creating inodes was most of a local run's staging on a busy file system.
func WriteHelpers(path string) error {
	b, err := helperZip()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// helperZip is pylib as a zip archive, built once per process; its bytes
// depend only on pylib (fixed times, sorted names).
var helperZip = sync.OnceValues(func() ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	stamp := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	err := fs.WalkDir(pylib, "pylib", func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := pylib.ReadFile(p)
		if err != nil {
			return err
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: strings.TrimPrefix(p, "pylib/"), Method: zip.Store, Modified: stamp})
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	})
	if err == nil {
		err = zw.Close()
	}
	return buf.Bytes(), err
})
