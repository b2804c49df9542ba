package provider_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// uuidRE matches a workspace id.
var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func TestAccWorkspaceResource(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	config := func(description, team string) string {
		return fmt.Sprintf(`
resource "aml_workspace" "test" {
  name         = "acc-ws"
  storage_path = %q
  description  = %q
  tags = {
    team = %q
  }
}
`, wsDir, description, team)
	}
	const res = "aml_workspace.test"

	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             checkWorkspaceDirGone(wsDir),
		Steps: []resource.TestStep{
			{
				Config: config("first", "a"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction(res, plancheck.ResourceActionCreate),
						// The plan shows where the workspace will live, as written;
						// its id is given when it is created.
						plancheck.ExpectKnownValue(res, tfjsonpath.New("storage_path"), knownvalue.StringExact(wsDir)),
						plancheck.ExpectUnknownValue(res, tfjsonpath.New("id")),
					},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("id"), knownvalue.StringRegexp(uuidRE)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("storage_path"), knownvalue.StringExact(wsDir)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("name"), knownvalue.StringExact("acc-ws")),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("description"), knownvalue.StringExact("first")),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("tags"), knownvalue.MapExact(map[string]knownvalue.Check{"team": knownvalue.StringExact("a")})),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("force_destroy"), knownvalue.Bool(false)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("created_time"), knownvalue.StringRegexp(regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`))),
				},
				Check: func(s *terraform.State) error {
					st, err := os.Stat(filepath.Join(wsDir, "workspace.db"))
					if err != nil {
						return fmt.Errorf("workspace store missing: %w", err)
					}
					if !st.Mode().IsRegular() || st.Size() == 0 {
						return fmt.Errorf("%s is not a non-empty file", filepath.Join(wsDir, "workspace.db"))
					}
					return nil
				},
			},
			{
				Config: config("second", "b"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(res, plancheck.ResourceActionUpdate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("id"), knownvalue.StringRegexp(uuidRE)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("description"), knownvalue.StringExact("second")),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("tags"), knownvalue.MapExact(map[string]knownvalue.Check{"team": knownvalue.StringExact("b")})),
				},
				// The update went to the store, not just to Terraform's state.
				Check: func(s *terraform.State) error {
					ws, err := testEngine(t).ReadWorkspace(t.Context(), wsDir)
					if err != nil {
						return err
					}
					if ws.Description != "second" || ws.Tags["team"] != "b" {
						return fmt.Errorf("store holds description %q tags %v, want second / team=b", ws.Description, ws.Tags)
					}
					return nil
				},
			},
			{
				ResourceName:            res,
				ImportState:             true,
				ImportStateIdFunc:       importIDFromState(res),
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"force_destroy"},
			},
		},
	})
}

// With deletion_policy = "PREVENT" a workspace with run history is kept (the
// destroy fails) until the policy (or the deprecated force_destroy) says delete.
func TestAccWorkspaceResource_forceDestroy(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": trainScript})
	config := func(force bool, withRun bool) string {
		c := fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name            = "acc-ws"
  storage_path    = %q
  force_destroy   = %t
  deletion_policy = "PREVENT"
}
`, wsDir, force)
		if withRun {
			c += fmt.Sprintf(`
resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "py"
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = %q
    }
  }
}

resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "train"
  source_directory     = %q
  script               = "train.py"
  run_configuration_id = aml_run_configuration.py.id
}
`, pythonBin, src)
		}
		return c
	}

	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             checkWorkspaceDirGone(wsDir),
		Steps: []resource.TestStep{
			{
				Config: config(false, true),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("aml_experiment_run.train", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
				},
			},
			{
				// Destroys the run (its record stays as history), then refuses the workspace.
				Config:      config(false, true),
				Destroy:     true,
				ExpectError: wrappedAll("holds 1 run record(s)", `set deletion_policy = "DELETE"`),
			},
			{
				Config: config(false, false),
				// Terraform still has the workspace, and so does the disk.
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				Check: func(s *terraform.State) error {
					if _, err := os.Stat(filepath.Join(wsDir, "workspace.db")); err != nil {
						return fmt.Errorf("workspace was removed although force_destroy = false: %w", err)
					}
					n, err := workspaceRunCount(t, wsDir)
					if err != nil {
						return err
					}
					if n != 1 {
						return fmt.Errorf("workspace holds %d run records, want 1 (history kept after destroying the run)", n)
					}
					return nil
				},
			},
			{
				Config: config(true, false),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("aml_workspace.ws", plancheck.ResourceActionUpdate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("aml_workspace.ws", tfjsonpath.New("force_destroy"), knownvalue.Bool(true)),
				},
			},
			// The final destroy now succeeds; CheckDestroy checks the directory is gone.
		},
	})
}

func TestAccWorkspaceResource_badInput(t *testing.T) {
	testAccPreCheck(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	config := func(name, storage string) string {
		return fmt.Sprintf(`
resource "aml_workspace" "test" {
  name         = %q
  storage_path = %q
}
`, name, storage)
	}

	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      config("acc-ws", file),
				ExpectError: wrappedAll("storage_path: ", "not-a-dir is a file, not a directory"),
			},
			{
				Config:      config("x", filepath.Join(dir, "ws")),
				ExpectError: wrappedAll("Attribute name must be 3 to 33 letters", "got: x"),
			},
			{
				Config:      config("-starts-with-dash", filepath.Join(dir, "ws")),
				ExpectError: wrapped("Attribute name must be 3 to 33 letters"),
			},
		},
	})
	// The file is untouched and no workspace was created.
	if b, err := os.ReadFile(file); err != nil || string(b) != "x" {
		t.Errorf("%s changed: %q, %v", file, b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ws")); !os.IsNotExist(err) {
		t.Errorf("a workspace directory was created for an invalid name: %v", err)
	}
}

// checkWorkspaceDirGone is a CheckDestroy: the workspace directory, and any
// rename-before-delete leftover, is gone.
func checkWorkspaceDirGone(wsDir string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		if _, err := os.Stat(wsDir); !os.IsNotExist(err) {
			return fmt.Errorf("workspace directory %s still exists after destroy (stat error %v)", wsDir, err)
		}
		ents, err := os.ReadDir(filepath.Dir(wsDir))
		if err != nil {
			return err
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "."+filepath.Base(wsDir)+".deleting-") {
				return fmt.Errorf("leftover %s after destroy", e.Name())
			}
		}
		return nil
	}
}

// The default deletion_policy lets `terraform destroy` succeed without losing
// history: the workspace that holds a run is kept on disk and forgotten, and
// the next apply of the same configuration adopts it with its runs.
func TestAccWorkspaceResource_keepHistoryByDefault(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": trainScript})
	withRun := fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name         = "acc-ws"
  storage_path = %q
}

resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "py"
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = %q
    }
  }
}

resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "train"
  source_directory     = %q
  script               = "train.py"
  run_configuration_id = aml_run_configuration.py.id
}
`, wsDir, pythonBin, src)
	kept := func(want int) func(*terraform.State) error {
		return func(*terraform.State) error {
			n, err := workspaceRunCount(t, wsDir)
			if err != nil {
				return fmt.Errorf("the workspace with run history was not kept: %w", err)
			}
			if n != want {
				return fmt.Errorf("kept workspace holds %d run records, want %d", n, want)
			}
			return nil
		}
	}
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             kept(2),
		Steps: []resource.TestStep{
			{
				Config: withRun,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("aml_workspace.ws", tfjsonpath.New("deletion_policy"), knownvalue.StringExact("KEEP_HISTORY")),
					statecheck.ExpectKnownValue("aml_experiment_run.train", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
				},
			},
			{Config: withRun, Destroy: true, Check: kept(1)},
			{
				// Applied again: the kept workspace is adopted, its history intact.
				Config: withRun,
				Check:  kept(2),
			},
		},
	})
}
