package provider_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/openaml/terraform-provider-aml/internal/testutil"
	sparktest "github.com/openaml/terraform-provider-aml/internal/testutil/spark"
	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
)

// sparkConfig attaches srv as a Spark head node (the real Spark of
// scripts/install-spark.sh) and runs script of src there as PySpark.
func sparkConfig(wsDir string, srv *sshd.Server, in sparktest.Install, master, src, script, runExtra string) string {
	return fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name            = "acc-spark"
  storage_path    = %q
  deletion_policy = "DELETE"
}

resource "aml_hdinsight_attachment" "spark" {
  workspace_id = aml_workspace.ws.id
  name         = "hdi"
  address      = "127.0.0.1"
  ssh_port     = %d
  username     = %q
  private_key  = %q
  host_key     = %q
  spark_home   = %q
  spark_master = %q
  force_detach = true
}

resource "aml_run_configuration" "pyspark" {
  workspace_id = aml_workspace.ws.id
  name         = "pyspark"
  framework    = "PySpark"
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = %q
    }
  }
  environment_variables = { SPARK_LOCAL_IP = "127.0.0.1" }
  spark {
    configuration = { "spark.sql.shuffle.partitions" = "2", "spark.ui.enabled" = "false" }
  }
}

resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "iris-spark"
  source_directory     = %q
  script               = %q
  compute_target       = aml_hdinsight_attachment.spark.name
  run_configuration_id = aml_run_configuration.pyspark.id
  %s
}
`, wsDir, srv.Port, srv.User, string(srv.KeyPEM), srv.HostKey, in.Home, master, in.Python, src, script, runExtra)
}

func pysparkExample(t *testing.T) string {
	t.Helper()
	src, err := filepath.Abs(filepath.Join("..", "..", "examples", "pyspark", "src"))
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// The example's pyspark.ml training on local[2]: versions in state, the run
// Completed with its accuracy, its application id and its model; import.
func TestAccHDInsightAttachment_local(t *testing.T) {
	testAccPreCheck(t)
	in := sparktest.Find(t)
	srv := sshd.Start(t, sshd.Options{})
	wsDir := filepath.Join(t.TempDir(), "ws")
	config := sparkConfig(wsDir, srv, in, "local[2]", pysparkExample(t), "train.py", `arguments = ["--reg", "0.01"]`)
	const hdi, run = "aml_hdinsight_attachment.spark", "aml_experiment_run.train"
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(hdi, tfjsonpath.New("spark_version"), knownvalue.StringExact("3.5.5")),
					statecheck.ExpectKnownValue(hdi, tfjsonpath.New("scala_version"), knownvalue.StringRegexp(regexp.MustCompile(`^2\.1[23]\.`))),
					statecheck.ExpectKnownValue(hdi, tfjsonpath.New("java_version"), knownvalue.StringRegexp(regexp.MustCompile(`^\d+\.`))),
					statecheck.ExpectKnownValue(hdi, tfjsonpath.New("hadoop_version"), knownvalue.StringRegexp(regexp.MustCompile(`^3\.`))),
					statecheck.ExpectKnownValue(hdi, tfjsonpath.New("python_versions"), knownvalue.NotNull()),
					statecheck.ExpectKnownValue(hdi, tfjsonpath.New("host_key_fingerprint"), knownvalue.StringExact(srv.HostKeyFingerprint)),
					statecheck.ExpectKnownValue(hdi, tfjsonpath.New("provisioning_state"), knownvalue.StringExact("Succeeded")),
					statecheck.ExpectKnownValue(run, tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
					statecheck.ExpectKnownValue(run, tfjsonpath.New("spark_application_id"), knownvalue.StringRegexp(regexp.MustCompile(`^local-\d+$`))),
					statecheck.ExpectKnownValue(run, tfjsonpath.New("metrics").AtMapKey("train_rows"), knownvalue.NotNull()),
				},
				Check: func(s *terraform.State) error {
					if acc, err := stateAttr(s, run, "metrics.accuracy"); err != nil || acc < "0.8" {
						return fmt.Errorf("accuracy %q (%v), want at least 0.8", acc, err)
					}
					outputs, err := stateAttr(s, run, "outputs_path")
					if err != nil {
						return err
					}
					if b, err := os.ReadFile(filepath.Join(outputs, "model.json")); err != nil || !bytes.Contains(b, []byte("coefficients")) {
						return fmt.Errorf("model.json: %q, %v", b, err)
					}
					return nil
				},
			},
			{
				ResourceName:            hdi,
				ImportState:             true,
				ImportStateIdFunc:       importIDFromState(hdi),
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"force_detach", "timeouts"},
			},
		},
	})
}

// Through a real standalone master and worker: the application gets an
// executor on the worker and an app- id.
func TestAccHDInsightAttachment_standalone(t *testing.T) {
	testAccPreCheck(t)
	in := sparktest.Find(t)
	master := sparktest.Standalone(t, in)
	srv := sshd.Start(t, sshd.Options{})
	wsDir := filepath.Join(t.TempDir(), "ws")
	const run = "aml_experiment_run.train"
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: sparkConfig(wsDir, srv, in, master, pysparkExample(t), "train.py", ""),
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue(run, tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
				statecheck.ExpectKnownValue(run, tfjsonpath.New("spark_application_id"), knownvalue.StringRegexp(regexp.MustCompile(`^app-\d{14}-\d{4}$`))),
				statecheck.ExpectKnownValue(run, tfjsonpath.New("metrics").AtMapKey("accuracy"), knownvalue.NotNull()),
			},
		}},
	})
}

// A failing PySpark script: the diagnostic carries its Python traceback
// although Spark keeps logging after it.
func TestAccHDInsightAttachment_failure(t *testing.T) {
	testAccPreCheck(t)
	in := sparktest.Find(t)
	srv := sshd.Start(t, sshd.Options{})
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"fail.py": `from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
spark.range(10).count()
def fit(labels):
    raise ValueError("bad labels: %d classes" % len(labels))
fit([1])
`})
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config:      sparkConfig(wsDir, srv, in, "local[1]", src, "fail.py", ""),
			ExpectError: regexp.MustCompile(`(?s)nonzero_exit.*Traceback \(most recent call last\).*line 5, in fit.*ValueError: bad labels: 1 classes`),
		}},
	})
}

// Destroy while a PySpark run is running cancels it and leaves no Spark
// process behind (the process table is checked for the run's name).
func TestAccHDInsightAttachment_cancelOnDestroy(t *testing.T) {
	testAccPreCheck(t)
	in := sparktest.Find(t)
	srv := sshd.Start(t, sshd.Options{})
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"long.py": `import time
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
print("started", flush=True)
time.sleep(600)
`})
	var runID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy: func(*terraform.State) error {
			return testutil.Poll(30*time.Second, "no process of run "+runID, func() (bool, error) {
				return len(processesNaming(runID)) == 0, nil
			})
		},
		Steps: []resource.TestStep{{
			Config: sparkConfig(wsDir, srv, in, "local[1]", src, "long.py", "wait_for_completion = false"),
			Check: func(s *terraform.State) error {
				var err error
				if runID, err = stateAttr(s, "aml_experiment_run.train", "run_id"); err != nil {
					return err
				}
				return testutil.Poll(90*time.Second, "the Spark driver of "+runID, func() (bool, error) {
					return len(processesNaming(runID)) > 0, nil
				})
			},
		}},
	})
}

// processesNaming lists the pids whose command line mentions s.
func processesNaming(s string) []string {
	var pids []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func TestAccHDInsightAttachment_badInput(t *testing.T) {
	testAccPreCheck(t)
	in := sparktest.Find(t)
	srv := sshd.Start(t, sshd.Options{})
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := pysparkExample(t)
	good := sparkConfig(wsDir, srv, in, "local[2]", src, "train.py", "")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      strings.Replace(good, `spark_master = "local[2]"`, `spark_master = "mesos://x:5050"`, 1),
				ExpectError: wrappedAll(`spark_master: "mesos://x:5050" is not a Spark master URL`, "spark://host:port"),
			},
			{
				Config:      strings.Replace(good, `spark_master = "local[2]"`, "spark_master = \"local[2]\"\n  deploy_mode = \"cluster\"", 1),
				ExpectError: wrapped("deploy_mode: cluster mode does not run with spark_master"),
			},
			{
				Config:      strings.Replace(good, `spark_home   = "`+in.Home+`"`, `spark_home   = "/nowhere/spark"`, 1),
				ExpectError: wrappedAll("spark_home: spark-submit not found on", "looked in /nowhere/spark/bin", "PATH="),
			},
			{
				Config:      strings.Replace(good, `"spark.ui.enabled" = "false"`, `"executor memory" = "1g"`, 1),
				ExpectError: wrapped(`spark.configuration: "executor memory" is not a Spark configuration key`),
			},
			{
				// Attached, then a Python run configuration sent to it, and a
				// PySpark one sent to local: both refused at plan.
				Config: good,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("aml_experiment_run.train", tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
				},
			},
			{
				Config:      strings.Replace(good, `compute_target       = aml_hdinsight_attachment.spark.name`, `compute_target       = "local"`, 1),
				ExpectError: wrappedAll(`framework = "PySpark"`, `compute target "local" runs Python`),
			},
			{
				Config: good + `
resource "aml_run_configuration" "plain" {
  workspace_id = aml_workspace.ws.id
  name         = "plain"
  environment {
    python {
      user_managed_dependencies = true
    }
  }
}

resource "aml_experiment_run" "plain" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "plain"
  source_directory     = "` + src + `"
  script               = "train.py"
  compute_target       = aml_hdinsight_attachment.spark.name
  run_configuration_id = aml_run_configuration.plain.id
}
`,
				ExpectError: wrappedAll(`framework = "Python"`, `compute target "hdi" runs PySpark`),
			},
		},
	})
}

// A provider killed while a PySpark run's driver runs: the next apply adopts
// that run (the same driver and application), never submits a second one.
func TestAccHDInsightAttachment_adoptAfterProviderKilled(t *testing.T) {
	testAccPreCheck(t)
	in := sparktest.Find(t)
	srv := sshd.Start(t, sshd.Options{})
	prelude := func(wsDir string) string {
		// The attachment and run configuration of sparkConfig, without its run.
		c := sparkConfig(wsDir, srv, in, "local[1]", "", "", "")
		return c[:strings.Index(c, `resource "aml_experiment_run" "train"`)]
	}
	testAdoptionAfterProviderKilled(t, prelude,
		"compute_target       = aml_hdinsight_attachment.spark.name\n  run_configuration_id = aml_run_configuration.pyspark.id",
		"from pyspark.sql import SparkSession\nspark = SparkSession.builder.getOrCreate()\n", false)
}
