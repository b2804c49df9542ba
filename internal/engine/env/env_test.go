package env

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openaml/terraform-provider-aml/internal/engine/field"
)

func conda(pip ...string) Environment {
	return Environment{Python: &Python{Conda: &CondaDependencies{PythonVersion: "3.11", PipPackages: pip}}}
}

func TestHash(t *testing.T) {
	base := conda("numpy==1.26.4", "pandas>=2", "scikit-learn")
	tests := []struct {
		name string
		env  Environment
		same bool
	}{
		{"identical", conda("numpy==1.26.4", "pandas>=2", "scikit-learn"), true},
		{"package order ignored", conda("scikit-learn", "pandas>=2", "numpy==1.26.4"), true},
		{"whitespace ignored", conda(" numpy == 1.26.4", "pandas >= 2 ", "scikit-learn"), true},
		{"duplicates ignored", conda("numpy==1.26.4", "pandas>=2", "scikit-learn", "numpy==1.26.4"), true},
		{"version pin changes it", conda("numpy==1.26.3", "pandas>=2", "scikit-learn"), false},
		{"removing a pin changes it", conda("numpy", "pandas>=2", "scikit-learn"), false},
		{"extra package changes it", conda("numpy==1.26.4", "pandas>=2", "scikit-learn", "torch"), false},
		{"python version changes it", func() Environment {
			e := conda("numpy==1.26.4", "pandas>=2", "scikit-learn")
			e.Python.Conda.PythonVersion = "3.12"
			return e
		}(), false},
		{"index url changes it", func() Environment {
			e := conda("numpy==1.26.4", "pandas>=2", "scikit-learn")
			e.Python.Conda.PipOptions.IndexURL = "https://mirror.example/simple"
			return e
		}(), false},
		{"docker changes it", func() Environment {
			e := conda("numpy==1.26.4", "pandas>=2", "scikit-learn")
			e.Docker = &Docker{Enabled: true, BaseImage: "python:3.11"}
			return e
		}(), false},
		{"user-managed changes it", func() Environment {
			e := conda("numpy==1.26.4", "pandas>=2", "scikit-learn")
			e.Python.UserManagedDependencies = true
			return e
		}(), false},
	}
	h := base.Hash()
	if !strings.HasPrefix(h, "sha256:") || len(h) != len("sha256:")+64 {
		t.Fatalf("hash %q is not sha256:<hex>", h)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.env.Hash(); (got == h) != tt.same {
				t.Errorf("same hash = %v, want %v", got == h, tt.same)
			}
		})
	}
	// Hash must not reorder the caller's slice as a side effect.
	e := conda("b", "a")
	e.Hash()
	if e.Python.Conda.PipPackages[0] != "b" {
		t.Errorf("Hash reordered the input: %v", e.Python.Conda.PipPackages)
	}
}

func TestHashChannelOrderCounts(t *testing.T) {
	a := conda("x")
	a.Python.Conda.Channels = []string{"conda-forge", "defaults"}
	b := conda("x")
	b.Python.Conda.Channels = []string{"defaults", "conda-forge"}
	if a.Hash() == b.Hash() {
		t.Error("channel order is conda's priority and must change the hash")
	}
}

func TestHashInterpreter(t *testing.T) {
	um := func(p string) Environment {
		return Environment{Python: &Python{UserManagedDependencies: true, InterpreterPath: p}}
	}
	if um("/usr/bin/python3").Hash() == um("/opt/py/bin/python3").Hash() {
		t.Error("a user-managed interpreter path must change the hash")
	}
	// System-managed environments ignore interpreter_path (it is not used).
	sm := func(p string) Environment { return Environment{Python: &Python{InterpreterPath: p}} }
	if sm("/a").Hash() != sm("/b").Hash() {
		t.Error("interpreter_path counted for a system-managed environment")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		env  Environment
		attr string // "" means valid
	}{
		{"empty", Environment{}, ""},
		{"plain packages", conda("numpy", "torch==2.3"), ""},
		{"docker with image", Environment{Docker: &Docker{Enabled: true, BaseImage: "python:3.11"}}, ""},
		{"docker disabled without image", Environment{Docker: &Docker{Enabled: false}}, ""},
		{"docker without base image", Environment{Docker: &Docker{Enabled: true}}, "environment.docker.base_image"},
		{"docker with blank base image", Environment{Docker: &Docker{Enabled: true, BaseImage: "  "}}, "environment.docker.base_image"},
		{"pip option as package", conda("numpy", "--index-url=https://x"), "environment.python.conda_dependencies.pip_packages[1]"},
		{"pip option with spaces", conda(" -e ."), "environment.python.conda_dependencies.pip_packages[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.env.Validate()
			if tt.attr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var fe *field.Error
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v (%T), want *field.Error", err, err)
			}
			if fe.Attr != tt.attr {
				t.Errorf("Attr = %q, want %q", fe.Attr, tt.attr)
			}
			if !strings.HasPrefix(err.Error(), tt.attr+": ") {
				t.Errorf("Error() = %q", err)
			}
		})
	}
}

// fakeInterpreter makes an executable named name in a fresh directory.
func fakeInterpreter(t *testing.T, name string) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

func userManaged(interp string) Environment {
	return Environment{Python: &Python{UserManagedDependencies: true, InterpreterPath: interp}}
}

func TestResolveLocal(t *testing.T) {
	binDir, fake := fakeInterpreter(t, "python3")
	emptyDir := t.TempDir()
	notExec := filepath.Join(emptyDir, "python3-noexec")
	if err := os.WriteFile(notExec, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		env     Environment
		path    string
		want    string // resolved path, when no error
		errAttr string
	}{
		{"default interpreter on PATH", userManaged(""), emptyDir + string(os.PathListSeparator) + binDir, fake, ""},
		{"named interpreter on PATH", userManaged("python3"), binDir, fake, ""},
		{"absolute interpreter", userManaged(fake), "", fake, ""},
		{"empty PATH entries skipped", userManaged("python3"), string(os.PathListSeparator) + binDir, fake, ""},
		{"missing on PATH", userManaged("python3"), emptyDir, "", "environment.python.interpreter_path"},
		{"missing absolute", userManaged(filepath.Join(emptyDir, "nope", "python")), binDir, "", "environment.python.interpreter_path"},
		{"not executable", userManaged(notExec), binDir, "", "environment.python.interpreter_path"},
		{"system-managed", Environment{Python: &Python{InterpreterPath: fake}}, binDir, "", "environment.python.user_managed_dependencies"},
		{"docker", Environment{Python: &Python{UserManagedDependencies: true}, Docker: &Docker{Enabled: true, BaseImage: "x"}}, binDir, "", "environment.docker.enabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveLocal(tt.env, tt.path)
			if tt.errAttr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if got != tt.want || !filepath.IsAbs(got) {
					t.Errorf("got %q, want %q", got, tt.want)
				}
				return
			}
			var fe *field.Error
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v (%T), want *field.Error", err, err)
			}
			if fe.Attr != tt.errAttr {
				t.Errorf("Attr = %q, want %q (%v)", fe.Attr, tt.errAttr, err)
			}
		})
	}
}

func TestResolveLocalMessages(t *testing.T) {
	empty := t.TempDir()
	_, err := ResolveLocal(userManaged("python3"), empty)
	if err == nil || !strings.Contains(err.Error(), `"python3"`) || !strings.Contains(err.Error(), empty) {
		t.Errorf("missing interpreter error %q should name the interpreter and the PATH searched", err)
	}
	_, err = ResolveLocal(Environment{}, empty)
	if err == nil || !strings.Contains(err.Error(), "user_managed_dependencies = true") {
		t.Errorf("system-managed error %q should say how to fix it", err)
	}
}

func TestResolveLocalRealPython(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not on PATH")
	}
	got, err := ResolveLocal(userManaged("python3"), os.Getenv("PATH"))
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(got) {
		t.Errorf("got %q, want an absolute path", got)
	}
	if out, err := exec.Command(got, "-c", "print(1+1)").Output(); err != nil || strings.TrimSpace(string(out)) != "2" {
		t.Errorf("resolved %q does not run python: %q %v", got, out, err)
	}
}

func TestNilSectionsTakeDefaults(t *testing.T) {
	if (Environment{}).Hash() != (Environment{Python: &Python{}, Docker: &Docker{}}).Hash() {
		t.Error("an unset section must hash like its defaults")
	}
	if userManaged("").Hash() != userManaged(DefaultInterpreter).Hash() {
		t.Error("an unset interpreter_path must hash like the default interpreter")
	}
	if err := (Environment{}).Validate(); err != nil {
		t.Errorf("empty environment: %v", err)
	}
	var fe *field.Error
	if _, err := ResolveLocal(Environment{}, ""); !errors.As(err, &fe) || fe.Attr != "environment.python.user_managed_dependencies" {
		t.Errorf("unset python section is system-managed: %v", err)
	}
}
