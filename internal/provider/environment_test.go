package provider_test

import (
	"fmt"
	"os"
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

	"github.com/openaml/terraform-provider-aml/internal/testutil/wheel"
)

// systemEnvConfig is a system-managed environment installing tinypkg==version
// offline from a wheel directory, and two runs of it, the second after the first.
func systemEnvConfig(wsDir, src, wheels, version string) string {
	return fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name          = "acc-env"
  storage_path  = %q
  deletion_policy = "DELETE"
}

resource "aml_run_configuration" "sys" {
  workspace_id = aml_workspace.ws.id
  name         = "sys"
  environment {
    python {
      user_managed_dependencies = false
      conda_dependencies {
        pip_packages = ["tinypkg==%s"]
        pip_options {
          find_links = [%q]
          no_index = true
        }
      }
    }
  }
}

resource "aml_experiment_run" "first" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "env"
  source_directory     = %q
  script               = "probe.py"
  run_configuration_id = aml_run_configuration.sys.id
}

resource "aml_experiment_run" "second" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "env"
  source_directory     = %q
  script               = "probe.py"
  run_configuration_id = aml_run_configuration.sys.id
  triggers             = { after = aml_experiment_run.first.run_id }
}
`, wsDir, version, wheels, src, src)
}

// completeEnvironments counts built environments in a workspace's cache.
func completeEnvironments(wsDir string) (int, error) {
	markers, err := filepath.Glob(filepath.Join(wsDir, "envs", "*", ".complete"))
	return len(markers), err
}

func TestAccExperimentRun_systemManagedEnvironment(t *testing.T) {
	wsDir := filepath.Join(t.TempDir(), "ws")
	wheels := wheel.Dir(t)
	src := newSourceDir(t, map[string]string{"probe.py": `import sys, tinypkg, aml_run
print("tinypkg", tinypkg.__version__, "from", sys.prefix)
aml_run.log("tinypkg_version", float(tinypkg.__version__))
`})
	hashDiffers := statecheck.CompareValue(compare.ValuesDiffer())
	checkEnvs := func(want int) resource.TestCheckFunc {
		return func(*terraform.State) error {
			n, err := completeEnvironments(wsDir)
			if err != nil {
				return err
			}
			if n != want {
				return fmt.Errorf("workspace has %d built environments, want %d", n, want)
			}
			return nil
		}
	}
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { testAccPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				// The first run builds the environment; the second finds it.
				Config: systemEnvConfig(wsDir, src, wheels, "1.0"),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("aml_experiment_run.first", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue("aml_experiment_run.first", tfjsonpath.New("environment_cache_hit"), knownvalue.Bool(false)),
					statecheck.ExpectKnownValue("aml_experiment_run.first", tfjsonpath.New("metrics").AtMapKey("tinypkg_version"), knownvalue.Float64Exact(1.0)),
					statecheck.ExpectKnownValue("aml_experiment_run.second", tfjsonpath.New("environment_cache_hit"), knownvalue.Bool(true)),
					statecheck.ExpectKnownValue("aml_experiment_run.second", tfjsonpath.New("environment_build_seconds"), knownvalue.Float64Exact(0)),
					statecheck.ExpectKnownValue("aml_experiment_run.second", tfjsonpath.New("metrics").AtMapKey("tinypkg_version"), knownvalue.Float64Exact(1.0)),
					statecheck.CompareValuePairs("aml_experiment_run.first", tfjsonpath.New("environment_hash"),
						"aml_experiment_run.second", tfjsonpath.New("environment_hash"), compare.ValuesSame()),
					hashDiffers.AddStateValue("aml_experiment_run.first", tfjsonpath.New("environment_hash")),
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					checkEnvs(1),
					resource.TestCheckResourceAttrWith("aml_experiment_run.first", "environment_build_seconds", func(v string) error {
						if v == "0" {
							return fmt.Errorf("the first run built nothing (build seconds %s)", v)
						}
						return nil
					}),
					resource.TestCheckResourceAttrWith("aml_experiment_run.second", "log_tail", func(v string) error {
						if !wrapped("found in the cache; nothing to install").MatchString(v) {
							return fmt.Errorf("second run's log does not report the cache hit:\n%s", v)
						}
						return nil
					}),
				),
			},
			{
				// A changed pin replaces the configuration and both runs, and builds
				// a second environment with a new hash.
				Config: systemEnvConfig(wsDir, src, wheels, "2.0"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("aml_run_configuration.sys", plancheck.ResourceActionReplace),
					plancheck.ExpectResourceAction("aml_experiment_run.first", plancheck.ResourceActionReplace),
					plancheck.ExpectResourceAction("aml_experiment_run.second", plancheck.ResourceActionReplace),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("aml_experiment_run.first", tfjsonpath.New("environment_cache_hit"), knownvalue.Bool(false)),
					statecheck.ExpectKnownValue("aml_experiment_run.first", tfjsonpath.New("metrics").AtMapKey("tinypkg_version"), knownvalue.Float64Exact(2.0)),
					statecheck.ExpectKnownValue("aml_experiment_run.second", tfjsonpath.New("environment_cache_hit"), knownvalue.Bool(true)),
					hashDiffers.AddStateValue("aml_experiment_run.first", tfjsonpath.New("environment_hash")),
				},
				Check: checkEnvs(2),
			},
			{
				// An unknown package: the apply fails with pip's (or uv's) own words
				// and nothing is cached for it.
				Config:      systemEnvConfig(wsDir, src, wheels, "9.9"),
				ExpectError: regexpAny(`tinypkg==9\.9`, `(?i)no matching distribution|not found|unsatisfiable|No solution`),
				Check:       checkEnvs(2),
			},
		},
	})
	if _, err := os.Stat(wsDir); err == nil {
		t.Errorf("workspace %s should be gone after destroy (force_destroy)", wsDir)
	}
}

// regexpAny matches when every pattern occurs somewhere (in any order).
func regexpAny(patterns ...string) *regexp.Regexp {
	expr := "(?s)"
	for _, p := range patterns {
		expr += "(?:.*(?:" + p + "))"
	}
	return regexp.MustCompile(expr)
}
