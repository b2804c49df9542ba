package provider_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/compare"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

func TestAccWorkspaceDataSource(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": trainScript})
	config := workspaceConfig(wsDir) + fmt.Sprintf(`
resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "train"
  source_directory     = %q
  script               = "train.py"
  run_configuration_id = aml_run_configuration.py.id
}

data "aml_workspace" "test" {
  storage_path = aml_workspace.ws.storage_path
  # Read after the run, so run_count counts it.
  depends_on = [aml_experiment_run.train]
}
`, src)
	const ds = "data.aml_workspace.test"
	nowhere := filepath.Join(filepath.Dir(wsDir), "nowhere")

	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.CompareValuePairs(ds, tfjsonpath.New("id"), "aml_workspace.ws", tfjsonpath.New("id"), compare.ValuesSame()),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("storage_path"), knownvalue.StringExact(wsDir)),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("name"), knownvalue.StringExact("acc-ws")),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("run_count"), knownvalue.Int64Exact(1)),
					statecheck.CompareValuePairs(ds, tfjsonpath.New("created_time"), "aml_workspace.ws", tfjsonpath.New("created_time"), compare.ValuesSame()),
				},
			},
			{
				// A name that does not match the workspace at storage_path.
				Config: config + `
data "aml_workspace" "wrong_name" {
  name         = "someone-else"
  storage_path = aml_workspace.ws.storage_path
}
`,
				ExpectError: wrappedAll("Workspace name mismatch", "holds workspace acc-ws, not someone-else"),
			},
			{
				Config: config + fmt.Sprintf(`
data "aml_workspace" "missing" {
  storage_path = %q
}
`, nowhere),
				ExpectError: wrappedAll("Cannot read workspace", "nowhere", "not found"),
			},
			{
				Config:      config + "\ndata \"aml_workspace\" \"neither\" {}\n",
				ExpectError: wrapped("At least one of these attributes must be configured: [name,storage_path]"),
			},
			{
				// Back to a valid configuration, so the final destroy can run.
				Config: config,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("run_count"), knownvalue.Int64Exact(1)),
				},
			},
		},
	})
	// Looking a workspace up never creates one.
	if _, err := os.Stat(nowhere); !os.IsNotExist(err) {
		t.Errorf("reading a missing workspace created %s (stat error %v)", nowhere, err)
	}
}
