package provider_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
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

// Write-only credentials (Terraform 1.11): the host is attached and used with
// private_key_wo, and no secret reaches state; bumping the version re-attaches.
func TestAccRemoteCompute_writeOnlyKey(t *testing.T) {
	testAccPreCheck(t)
	srv := sshd.Start(t, sshd.Options{EncryptedKeyPassphrase: "open sesame"})
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": remoteTrainScript})
	config := func(version int) string {
		return fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name            = "acc-wo"
  storage_path    = %q
  deletion_policy = "DELETE"
}

resource "aml_remote_compute" "host" {
  workspace_id                      = aml_workspace.ws.id
  name                              = "wo-host"
  address                           = "127.0.0.1"
  ssh_port                          = %d
  username                          = %q
  private_key_wo                    = %q
  private_key_wo_version            = %d
  private_key_passphrase_wo         = "open sesame"
  private_key_passphrase_wo_version = 1
  host_key                          = %q
  force_detach                      = true
}

resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "host-python"
  environment {
    python {
       user_managed_dependencies = true
       interpreter_path = "python3"
     }
  }
}

resource "aml_experiment_run" "remote" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "remote"
  source_directory     = %q
  script               = "train.py"
  compute_target       = aml_remote_compute.host.name
  run_configuration_id = aml_run_configuration.py.id
}
`, wsDir, srv.Port, srv.User, string(srv.KeyPEM), version, srv.HostKey, src)
	}
	noSecretInState := func(s *terraform.State) error {
		for addr, rs := range s.RootModule().Resources {
			for k, v := range rs.Primary.Attributes {
				if strings.Contains(v, "PRIVATE KEY") || strings.Contains(v, "open sesame") {
					return fmt.Errorf("%s.%s holds a secret", addr, k)
				}
			}
		}
		return nil
	}
	const host = "aml_remote_compute.host"
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config(1),
				Check:  noSecretInState,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(host, tfjsonpath.New("private_key"), knownvalue.Null()),
					statecheck.ExpectKnownValue(host, tfjsonpath.New("private_key_wo"), knownvalue.Null()),
					statecheck.ExpectKnownValue("aml_experiment_run.remote", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
				},
			},
			{
				Config: config(2),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(host, plancheck.ResourceActionReplace)},
				},
				Check: noSecretInState,
			},
		},
	})
}
