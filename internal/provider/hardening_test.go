package provider_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// A run directory removed outside Terraform: the refresh notices (output_files
// empty, a warning), and the plan re-runs nothing.
func TestAccExperimentRunResource_outputsRemovedOutOfBand(t *testing.T) {
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
`, src)
	const res = "aml_experiment_run.train"
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("output_files"), knownvalue.ListSizeExact(1)),
				},
				Check: func(s *terraform.State) error {
					outputs, err := stateAttr(s, res, "outputs_path")
					if err != nil {
						return err
					}
					return os.RemoveAll(filepath.Dir(outputs)) // the whole run directory
				},
			},
			{
				Config: config,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("output_files"), knownvalue.ListSizeExact(0)),
				},
			},
		},
	})
}
