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

// State is bounded: a run that logs 3,000 metrics and writes 1,500 files keeps
// the first 1,000 of each in state, with the counts; the aml_run data source
// has them all.
func TestAccExperimentRunResource_stateBounded(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": `import json, os
with open(os.environ["AML_METRICS_FILE"], "a") as f:
    for i in range(3000):
        f.write(json.dumps({"name": "m%04d" % i, "value": i}) + "\n")
for i in range(1500):
    open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "f%04d.txt" % i), "w").close()
`})
	config := workspaceConfig(wsDir) + fmt.Sprintf(`
resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "train"
  source_directory     = %q
  script               = "train.py"
  run_configuration_id = aml_run_configuration.py.id
}

data "aml_run" "all" {
  workspace_id = aml_workspace.ws.id
  run_id       = aml_experiment_run.train.run_id
}
`, src)
	const res = "aml_experiment_run.train"
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: config,
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue(res, tfjsonpath.New("metric_count"), knownvalue.Int64Exact(3000)),
				statecheck.ExpectKnownValue(res, tfjsonpath.New("metrics"), knownvalue.MapSizeExact(1000)),
				statecheck.ExpectKnownValue(res, tfjsonpath.New("metrics").AtMapKey("m0999"), knownvalue.Float64Exact(999)),
				statecheck.ExpectKnownValue(res, tfjsonpath.New("output_file_count"), knownvalue.Int64Exact(1500)),
				statecheck.ExpectKnownValue(res, tfjsonpath.New("output_files"), knownvalue.ListSizeExact(1000)),
				statecheck.ExpectKnownValue("data.aml_run.all", tfjsonpath.New("metrics"), knownvalue.MapSizeExact(3000)),
				statecheck.ExpectKnownValue("data.aml_run.all", tfjsonpath.New("output_files"), knownvalue.ListSizeExact(1500)),
			},
		}},
	})
}
