// Package architecture holds the tests that fail when the layering is broken:
// the engine is usable without Terraform, the provider reaches drivers only
// through the engine, kinds are independent plug-ins, and the engine facade
// never switches on a target kind.
package architecture

import (
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/openaml/terraform-provider-aml"

// shared are the packages under drivers/ that are not kinds.
var shared = map[string]bool{"hostrun": true, "driverstest": true, "sshhost": true}

// imports maps each package of the module to its direct non-test imports.
func imports(t *testing.T) map[string][]string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, top := range []string{"internal", "cmd"} {
		walkPackages(t, root, top, out)
	}
	return out
}

// walkPackages adds the packages under root/top to out.
func walkPackages(t *testing.T, root, top string, out map[string][]string) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(root, top), func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		pkg, err := build.ImportDir(p, 0)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[module+"/"+filepath.ToSlash(rel)] = pkg.Imports
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// deps is the transitive closure of a package's imports.
func deps(all map[string][]string, pkg string) []string {
	seen := map[string]bool{}
	var walk func(string)
	walk = func(p string) {
		for _, q := range all[p] {
			if !seen[q] {
				seen[q] = true
				walk(q)
			}
		}
	}
	walk(pkg)
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func under(pkg, dir string) bool {
	p := module + "/" + dir
	return pkg == p || strings.HasPrefix(pkg, p+"/")
}

// kindOf returns the kind a package belongs to ("" when none).
func kindOf(pkg string) string {
	rest, ok := strings.CutPrefix(pkg, module+"/internal/engine/drivers/")
	if !ok {
		return ""
	}
	k, _, _ := strings.Cut(rest, "/")
	if shared[k] {
		return ""
	}
	return k
}

func TestImportRules(t *testing.T) {
	all := imports(t)
	kinds := map[string]bool{}
	for pkg := range all {
		if k := kindOf(pkg); k != "" {
			kinds[k] = true
		}
	}
	for _, c := range []string{"cmd/aml", "cmd/aml-supervisor"} {
		if _, ok := all[module+"/"+c]; !ok {
			t.Fatalf("%s not found: the import rules would not check it", c)
		}
	}
	if len(kinds) < 3 {
		t.Fatalf("found kinds %v; expected at least local, pool and ssh (is the layout still internal/engine/drivers/<kind>?)", kinds)
	}
	for pkg, direct := range all {
		for _, d := range direct {
			if under(pkg, "internal/provider") && under(d, "internal/engine/drivers") {
				t.Errorf("%s imports %s: the provider reaches drivers only through the engine", pkg, d)
			}
			// The aml command line is glue over the engine, as the provider is.
			if under(pkg, "cmd/aml") && (under(d, "internal/engine/drivers") || under(d, "internal/engine/store") || under(d, "internal/provider")) {
				t.Errorf("%s imports %s: the aml command reaches workspaces only through the engine", pkg, d)
			}

		}
		for _, d := range deps(all, pkg) {
			switch {
			case under(pkg, "internal/engine") && strings.HasPrefix(d, "github.com/hashicorp/terraform-plugin"):
				t.Errorf("%s imports %s: the engine must not import terraform-plugin-*", pkg, d)
			case under(pkg, "cmd") && strings.HasPrefix(d, "github.com/hashicorp/terraform-plugin"):
				t.Errorf("%s imports %s: the aml command does not depend on the plugin framework", pkg, d)
			// The run supervisor binary starts once per run: it stays small (no
			// store, no driver interface, no SSH, no cloud SDK).
			case under(pkg, "cmd/aml-supervisor") && (under(d, "internal/engine/store") || d == module+"/internal/engine/drivers" || under(d, "internal/engine/remote") || strings.HasPrefix(d, "github.com/aws/") || strings.HasPrefix(d, "google.golang.org/grpc")):
				t.Errorf("%s imports %s: the run supervisor binary must stay small (it starts once per run)", pkg, d)
			case under(pkg, "internal/engine/store") && under(d, "internal/engine/drivers"):
				t.Errorf("%s imports %s: the store must not import a driver", pkg, d)
			case kindOf(pkg) != "" && kindOf(d) != "" && kindOf(pkg) != kindOf(d):
				t.Errorf("%s imports %s: no kind imports another (share code through drivers/hostrun)", pkg, d)
			case (under(pkg, "internal/engine/drivers/hostrun") || pkg == module+"/internal/engine/drivers") && kindOf(d) != "":
				t.Errorf("%s imports %s: shared driver code must not depend on a kind", pkg, d)
			}
		}
	}
}

// TestFacadeDoesNotSwitchOnKind: the engine facade reaches kinds through the
// registry; a switch on a kind is where a new kind would have to be added.
func TestFacadeDoesNotSwitchOnKind(t *testing.T) {
	dir := "../engine"
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	mentionsKind := func(n ast.Node) bool {
		found := false
		ast.Inspect(n, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.SelectorExpr:
				found = found || x.Sel.Name == "Kind"
			case *ast.Ident:
				found = found || strings.HasPrefix(x.Name, "Kind")
			}
			return !found
		})
		return found
	}
	checked := 0
	for _, p := range pkgs {
		for name, f := range p.Files {
			checked++
			ast.Inspect(f, func(n ast.Node) bool {
				if sw, ok := n.(*ast.SwitchStmt); ok {
					if sw.Tag != nil && mentionsKind(sw.Tag) {
						t.Errorf("%s: switch on a target kind (%s); register the kind instead", name, fset.Position(sw.Pos()))
					}
					for _, c := range sw.Body.List {
						for _, e := range c.(*ast.CaseClause).List {
							if mentionsKind(e) {
								t.Errorf("%s: case on a target kind (%s); register the kind instead", name, fset.Position(e.Pos()))
							}
						}
					}
				}
				return true
			})
		}
	}
	if checked == 0 {
		t.Fatal("no engine files checked")
	}
}
