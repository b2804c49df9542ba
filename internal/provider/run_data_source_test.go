package provider_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/compare"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

func TestAccRunDataSource(t *testing.T) {
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
  tags = {
    owner = "alice"
  }
}

data "aml_run" "test" {
  workspace_id = aml_workspace.ws.id
  run_id       = aml_experiment_run.train.run_id
}
`, src)
	const (
		ds  = "data.aml_run.test"
		res = "aml_experiment_run.train"
	)
	same := func(attr string) statecheck.StateCheck {
		return statecheck.CompareValuePairs(ds, tfjsonpath.New(attr), res, tfjsonpath.New(attr), compare.ValuesSame())
	}

	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("exit_code"), knownvalue.Int64Exact(0)),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("experiment_name"), knownvalue.StringExact("train")),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("compute_target"), knownvalue.StringExact("local")),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("metrics"), knownvalue.MapExact(map[string]knownvalue.Check{
						"accuracy": knownvalue.Float64Exact(0.93),
						"loss":     knownvalue.Float64Exact(0.25),
					})),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("output_files"), knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("model.txt")})),
					statecheck.ExpectKnownValue(ds, tfjsonpath.New("tags"), knownvalue.MapExact(map[string]knownvalue.Check{"owner": knownvalue.StringExact("alice")})),
					same("id"),
					same("run_id"),
					same("outputs_path"),
					same("log_path"),
					same("log_tail"),
					same("snapshot_hash"),
					same("start_time"),
					same("end_time"),
				},
			},
			{
				Config: config + `
data "aml_run" "missing" {
  workspace_id = aml_workspace.ws.id
  run_id       = "train_1_deadbeef"
}
`,
				ExpectError: wrappedAll("Cannot read run train_1_deadbeef", "not found"),
			},
			{
				Config: config,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
		},
	})
}
