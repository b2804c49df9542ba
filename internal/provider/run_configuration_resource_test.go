package provider_test

import (
	"fmt"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/compare"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

func TestAccRunConfigurationResource(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{
		"env.py": `import os, aml_run
aml_run.log("stage", float(os.environ["STAGE"]))
`,
	})
	config := func(maxDuration int, stage string) string {
		return fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name          = "acc-ws"
  storage_path  = %q
  deletion_policy = "DELETE"
}

resource "aml_run_configuration" "test" {
  workspace_id = aml_workspace.ws.id
  name         = "user-python"
  framework    = "Python"
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = %q
    }
  }
  environment_variables = {
    STAGE = %q
  }
  max_run_duration_seconds = %d
}

resource "aml_experiment_run" "dependent" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "env"
  source_directory     = %q
  script               = "env.py"
  run_configuration_id = aml_run_configuration.test.id
}
`, wsDir, pythonBin, stage, maxDuration, src)
	}
	const (
		res = "aml_run_configuration.test"
		run = "aml_experiment_run.dependent"
	)
	sameHash := statecheck.CompareValue(compare.ValuesSame())
	sameRun := statecheck.CompareValue(compare.ValuesSame())
	newRun := statecheck.CompareValue(compare.ValuesDiffer())

	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config(600, "1"),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("id"), knownvalue.StringRegexp(regexp.MustCompile(`^[0-9a-f-]{36}/runconfigs/user-python$`))),
					statecheck.CompareValuePairs(res, tfjsonpath.New("workspace_id"), "aml_workspace.ws", tfjsonpath.New("id"), compare.ValuesSame()),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("framework"), knownvalue.StringExact("Python")),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("communicator"), knownvalue.StringExact("None")),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("node_count"), knownvalue.Int64Exact(1)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("environment").AtMapKey("python").AtMapKey("interpreter_path"), knownvalue.StringExact(pythonBin)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("environment").AtMapKey("python").AtMapKey("user_managed_dependencies"), knownvalue.Bool(true)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("environment").AtMapKey("docker"), knownvalue.Null()),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("max_run_duration_seconds"), knownvalue.Int64Exact(600)),
					statecheck.ExpectKnownValue(res, tfjsonpath.New("environment_hash"), knownvalue.StringRegexp(regexp.MustCompile(`^sha256:[0-9a-f]{64}$`))),
					sameHash.AddStateValue(res, tfjsonpath.New("environment_hash")),
					// The configuration's variables reach the run.
					statecheck.ExpectKnownValue(run, tfjsonpath.New("metrics").AtMapKey("stage"), knownvalue.Float64Exact(1)),
					sameRun.AddStateValue(run, tfjsonpath.New("run_id")),
					newRun.AddStateValue(run, tfjsonpath.New("run_id")),
				},
			},
			{
				// max_run_duration_seconds updates in place and does not re-run anything.
				Config: config(900, "1"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction(res, plancheck.ResourceActionUpdate),
						plancheck.ExpectResourceAction(run, plancheck.ResourceActionNoop),
					},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("max_run_duration_seconds"), knownvalue.Int64Exact(900)),
					sameHash.AddStateValue(res, tfjsonpath.New("environment_hash")),
					sameRun.AddStateValue(run, tfjsonpath.New("run_id")),
				},
				Check: func(s *terraform.State) error {
					rc, err := testEngine(t).ReadRunConfig(t.Context(), wsDir+"/runconfigs/user-python")
					if err != nil {
						return err
					}
					if rc.Spec.MaxRunDurationSeconds != 900 {
						return fmt.Errorf("store holds max_run_duration_seconds %d, want 900", rc.Spec.MaxRunDurationSeconds)
					}
					return nil
				},
			},
			{
				// What a run executes changed: the configuration and its runs are replaced.
				Config: config(900, "2"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction(res, plancheck.ResourceActionReplace),
						plancheck.ExpectResourceAction(run, plancheck.ResourceActionReplace),
					},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(res, tfjsonpath.New("environment_variables"), knownvalue.MapExact(map[string]knownvalue.Check{"STAGE": knownvalue.StringExact("2")})),
					statecheck.ExpectKnownValue(run, tfjsonpath.New("metrics").AtMapKey("stage"), knownvalue.Float64Exact(2)),
					// Environment variables are not part of the environment definition.
					sameHash.AddStateValue(res, tfjsonpath.New("environment_hash")),
					newRun.AddStateValue(run, tfjsonpath.New("run_id")),
				},
			},
			{
				ResourceName:      res,
				ImportState:       true,
				ImportStateId:     wsDir + "/runconfigs/user-python",
				ImportStateVerify: true,
			},
			{
				ResourceName:  res,
				ImportState:   true,
				ImportStateId: "user-python",
				ExpectError:   wrapped("expecting {workspace_id}/runconfigs/{name}"),
			},
			{
				ResourceName:  res,
				ImportState:   true,
				ImportStateId: wsDir + "/runs/user-python",
				ExpectError:   wrapped("expecting {workspace_id}/runconfigs/{name}"),
			},
		},
	})
}

func TestAccRunConfigurationResource_badInput(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	config := func(body string) string {
		return fmt.Sprintf(`
resource "aml_run_configuration" "test" {
  workspace_id = %q
  name         = "bad"
%s
}
`, wsDir, body)
	}

	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      config(`framework = "Tensorflow"`),
				ExpectError: wrappedAll(`Attribute framework value must be one of: ["Python" "PySpark"], got: "Tensorflow"`),
			},
			{
				Config:      config(`communicator = "Carrier-Pigeon"`),
				ExpectError: wrappedAll(`Attribute communicator value must be one of:`, `"Nccl"`, `got: "Carrier-Pigeon"`),
			},
			{
				Config:      config(`node_count = 0`),
				ExpectError: wrapped("Attribute node_count value must be at least 1, got: 0"),
			},
			{
				Config: config(`environment {
    docker {
      enabled = true
    }
  }`),
				ExpectError: wrapped("environment.docker.base_image: is required when environment.docker.enabled is true"),
			},
			{
				Config: config(`environment_variables = {
    "1BAD" = "x"
  }`),
				ExpectError: wrapped(`"1BAD" is not a valid environment variable name`),
			},
			{
				Config:      config(`max_run_duration_seconds = 0`),
				ExpectError: wrapped("Attribute max_run_duration_seconds value must be at least 1, got: 0"),
			},
			{
				Config: config(`environment {
    python {
      conda_dependencies {
        pip_packages = ["numpy", "scikit-learn=1.5"]
      }
    }
  }`),
				ExpectError: wrappedAll("pip_packages[1]:", `"scikit-learn=1.5" is not a PEP 508 requirement`),
			},
			{
				Config: config(`environment {
    python {
      user_managed_dependencies = true
      conda_dependencies {
        pip_packages = ["numpy"]
      }
    }
  }`),
				ExpectError: wrappedAll("environment.python.conda_dependencies:", "user_managed_dependencies = true", "installs nothing"),
			},
			{
				// A typo inside the environment is an error, not dropped (blocks, not object values).
				Config: config(`environment {
    docker {
      enabled    = true
      base_image = "python:3.11"
      shm_sise   = "2g"
    }
  }`),
				ExpectError: wrappedAll("Unsupported argument", `An argument named "shm_sise" is not expected here`),
			},
		},
	})
}
