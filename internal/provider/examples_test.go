package provider_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Every example under examples/ is a complete configuration of its own: the
// real terraform validates it against this provider (a binary built from this
// tree, through dev_overrides, so nothing is downloaded).
func TestExamplesValidate(t *testing.T) {
	testAccPreCheck(t)
	tmp := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(tmp, "terraform-provider-aml"), "../..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the provider: %v\n%s", err, out)
	}
	rc := filepath.Join(tmp, "cli.tfrc")
	cfg := "provider_installation {\n  dev_overrides {\n    \"openaml/aml\" = \"" + tmp + "\"\n  }\n  direct {}\n}\n"
	if err := os.WriteFile(rc, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var dirs []string
	err := filepath.WalkDir("../../examples", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".tf" {
			return err
		}
		if dir := filepath.Dir(p); len(dirs) == 0 || dirs[len(dirs)-1] != dir {
			dirs = append(dirs, dir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 8 {
		t.Fatalf("found only %d example directories: %v", len(dirs), dirs)
	}
	for _, dir := range dirs {
		t.Run(strings.TrimPrefix(filepath.ToSlash(dir), "../../examples/"), func(t *testing.T) {
			cmd := exec.Command(terraformBin, "validate", "-no-color")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "TF_IN_AUTOMATION=1")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "The configuration is valid") {
				t.Fatalf("terraform validate in %s: %v\n%s", dir, err, out)
			}
		})
	}
}
