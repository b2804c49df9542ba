package provider_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/openaml/terraform-provider-aml/internal/engine/drivers/hostrun/supervise"
	"github.com/openaml/terraform-provider-aml/internal/engine/env"
	"github.com/openaml/terraform-provider-aml/internal/engine/run"
	"github.com/openaml/terraform-provider-aml/internal/testutil"
	dockertest "github.com/openaml/terraform-provider-aml/internal/testutil/docker"
	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
)

// containerScript reports whether it runs in a container (the run directory
// mounted at /aml/run, Docker's marker file), logs metrics and writes an output.
const containerScript = `import os, sys, time
import aml_run
print("hello from the container", os.getcwd(), flush=True)
inside = os.getcwd() == "/aml/run" and os.path.exists("/.dockerenv")
aml_run.log("in_container", 1.0 if inside else 0.0)
aml_run.log("uid", float(os.getuid()))
try:
    import six
    aml_run.log("six", float(six.__version__.rsplit(".", 1)[0]))
except ImportError:
    pass
with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "model.txt"), "w") as f:
    f.write("weights from the container")
if os.environ.get("SLEEP"):
    with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "sleeping"), "w") as f:
        f.write("1")
    print("sleeping", flush=True)
    time.sleep(float(os.environ["SLEEP"]))
`

// dockerConfig is a workspace, a run configuration running in the test
// engine's base image (system-managed with pip when pip is not empty, else
// user-managed python3) and runs of containerScript.
func dockerConfig(wsDir, image, pip, prelude, runs string) string {
	python := `python {
      user_managed_dependencies = true
      interpreter_path          = "python3"
    }`
	if pip != "" {
		python = fmt.Sprintf(`python {
      user_managed_dependencies = false
      conda_dependencies {
        pip_packages = [%q]
      }
    }`, pip)
	}
	return fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name            = "acc-docker"
  storage_path    = %q
  deletion_policy = "DELETE"
}
%s
resource "aml_run_configuration" "docker" {
  workspace_id = aml_workspace.ws.id
  name         = "docker"
  environment {
    %s
    docker {
      enabled    = true
      base_image = %q
      shm_size   = "256m"
      arguments  = ["--memory", "1g", "--pids-limit=512"]
    }
  }
}
%s`, wsDir, prelude, python, image, runs)
}

func dockerRun(name, src, target, extra string) string {
	if target == "" {
		target = `"local"`
	}
	return fmt.Sprintf(`
resource "aml_experiment_run" %q {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "docker"
  source_directory     = %q
  script               = "train.py"
  compute_target       = %s
  run_configuration_id = aml_run_configuration.docker.id
  %s
}
`, name, src, target, extra)
}

// noContainers checks that no container of the run in state at address is
// left, running or not.
func noContainers(eng *dockertest.Engine, t *testing.T, address string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		id, err := stateAttr(s, address, "run_id")
		if err != nil {
			return err
		}
		if left := eng.Containers(t, supervise.LabelRunID+"="+id, true); len(left) > 0 {
			return fmt.Errorf("run %s left containers %v", id, left)
		}
		return nil
	}
}

func checkImages(eng *dockertest.Engine, t *testing.T, tags *map[string]bool, want int) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for _, tag := range eng.Images(t, env.ImageRepository) {
			(*tags)[tag] = true
		}
		if len(*tags) < want {
			return fmt.Errorf("the engine has images %v, want %d built by this test", *tags, want)
		}
		return nil
	}
}

func inContainer(res string) []statecheck.StateCheck {
	return []statecheck.StateCheck{
		statecheck.ExpectKnownValue(res, tfjsonpath.New("status"), knownvalue.StringExact("Completed")),
		statecheck.ExpectKnownValue(res, tfjsonpath.New("exit_code"), knownvalue.Int64Exact(0)),
		statecheck.ExpectKnownValue(res, tfjsonpath.New("metrics").AtMapKey("in_container"), knownvalue.Float64Exact(1)),
		statecheck.ExpectKnownValue(res, tfjsonpath.New("output_files"), knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("model.txt")})),
		statecheck.ExpectKnownValue(res, tfjsonpath.New("log_tail"), knownvalue.StringRegexp(regexp.MustCompile(`hello from the container /aml/run`))),
	}
}

// A system-managed Docker environment with a real package from the package
// index: the first run builds the image (tagged by the environment key), the
// second reuses it, a changed pin builds a new one; every run Completed in a
// container with metrics, outputs and log, and left no container.
func TestAccDocker_systemManagedImage(t *testing.T) {
	testAccPreCheck(t)
	eng := dockertest.Shared(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": containerScript})
	runs := dockerRun("first", src, "", "") + dockerRun("second", src, "", "triggers = { after = aml_experiment_run.first.run_id }")
	tags := map[string]bool{}
	checksFor := func(six float64) []statecheck.StateCheck {
		c := append(inContainer("aml_experiment_run.first"), inContainer("aml_experiment_run.second")...)
		return append(c,
			statecheck.ExpectKnownValue("aml_experiment_run.first", tfjsonpath.New("metrics").AtMapKey("six"), knownvalue.Float64Exact(six)),
			statecheck.ExpectKnownValue("aml_experiment_run.first", tfjsonpath.New("metrics").AtMapKey("uid"), knownvalue.Float64Exact(float64(os.Getuid()))),
			statecheck.ExpectKnownValue("aml_experiment_run.first", tfjsonpath.New("environment_cache_hit"), knownvalue.Bool(false)),
			statecheck.ExpectKnownValue("aml_experiment_run.second", tfjsonpath.New("environment_cache_hit"), knownvalue.Bool(true)),
			statecheck.ExpectKnownValue("aml_experiment_run.second", tfjsonpath.New("environment_build_seconds"), knownvalue.Float64Exact(0)),
			statecheck.ExpectKnownValue("aml_experiment_run.second", tfjsonpath.New("metrics").AtMapKey("six"), knownvalue.Float64Exact(six)),
		)
	}
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:            dockerConfig(wsDir, eng.BaseImage, "six==1.16.0", "", runs),
				ConfigStateChecks: checksFor(1.16),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttrWith("aml_experiment_run.first", "environment_build_seconds", positive),
					resource.TestMatchResourceAttr("aml_experiment_run.second", "log_tail", wrapped("found; nothing to build")),
					noContainers(eng, t, "aml_experiment_run.first"), noContainers(eng, t, "aml_experiment_run.second"),
					checkImages(eng, t, &tags, 1),
					func(s *terraform.State) error {
						outputs, err := stateAttr(s, "aml_experiment_run.first", "outputs_path")
						if err != nil {
							return err
						}
						b, err := os.ReadFile(filepath.Join(outputs, "model.txt"))
						if err != nil || string(b) != "weights from the container" {
							return fmt.Errorf("outputs/model.txt = %q, %v", b, err)
						}
						return nil
					},
				),
			},
			{
				// A changed pin is a new environment hash: a new image.
				Config: dockerConfig(wsDir, eng.BaseImage, "six==1.15.0", "", runs),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("aml_experiment_run.first", plancheck.ResourceActionReplace),
				}},
				ConfigStateChecks: checksFor(1.15),
				Check:             resource.ComposeAggregateTestCheckFunc(checkImages(eng, t, &tags, 2), noContainers(eng, t, "aml_experiment_run.first")),
			},
		},
	})
}

// A failing image build fails the apply with pip's message, and no image is
// tagged for its environment.
func TestAccDocker_failedBuildNotCached(t *testing.T) {
	testAccPreCheck(t)
	eng := dockertest.Shared(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": containerScript})
	const bad = "aml-no-such-package-for-tests==0.0.1"
	baseID, err := eng.Docker(context.Background(), "image", "inspect", "--format", "{{.Id}}", eng.BaseImage)
	if err != nil {
		t.Fatal(err)
	}
	e := env.Environment{
		Docker: &env.Docker{Enabled: true, BaseImage: eng.BaseImage},
		Python: &env.Python{Conda: &env.CondaDependencies{PipPackages: []string{bad}}},
	}
	tag := env.ImageTag(env.ImageKey(e, baseID))
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config:      dockerConfig(wsDir, eng.BaseImage, bad, "", dockerRun("bad", src, "", "")),
			ExpectError: regexp.MustCompile(`No matching distribution found for\s+aml-no-such-package-for-tests`),
		}},
		CheckDestroy: func(*terraform.State) error {
			if eng.ImageExists(tag) {
				return fmt.Errorf("a failed build was tagged %s", tag)
			}
			return nil
		},
	})
}

// findSupervisor finds the `agent supervise` process of run id on this host.
func findSupervisor(id string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(cmdline, []byte("\x00supervise\x00")) && bytes.Contains(cmdline, []byte(id)) {
			return pid
		}
	}
	return 0
}

func waitRunningContainer(eng *dockertest.Engine, t *testing.T, id string) error {
	return testutil.Poll(60*time.Second, "the run's container to run", func() (bool, error) {
		return len(eng.Containers(t, supervise.LabelRunID+"="+id, false)) == 1, nil
	})
}

// Destroying a running Docker run cancels it (docker stop within the grace
// period) and leaves no container; killing a run's supervisor stops and
// removes its container with no one observing, and the run is then lost.
func TestAccDocker_cancelAndKilledSupervisor(t *testing.T) {
	testAccPreCheck(t)
	eng := dockertest.Shared(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": containerScript})
	sleeping := `wait_for_completion = false
  environment_variables = { SLEEP = "300" }`
	cfg := dockerConfig(wsDir, eng.BaseImage, "", "", dockerRun("cancel", src, "", sleeping)+dockerRun("orphan", src, "", sleeping))
	var cancelID, orphanID string
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: cfg,
				Check: func(s *terraform.State) error {
					var err error
					if cancelID, err = stateAttr(s, "aml_experiment_run.cancel", "run_id"); err != nil {
						return err
					}
					if orphanID, err = stateAttr(s, "aml_experiment_run.orphan", "run_id"); err != nil {
						return err
					}
					for _, id := range []string{cancelID, orphanID} {
						if err := waitRunningContainer(eng, t, id); err != nil {
							return err
						}
					}
					sup := findSupervisor(orphanID)
					if sup == 0 {
						return fmt.Errorf("no supervisor of run %s", orphanID)
					}
					if err := syscall.Kill(sup, syscall.SIGKILL); err != nil {
						return err
					}
					// Nothing observes the run now: the keeper alone stops and
					// removes the container.
					return testutil.Poll(90*time.Second, "the orphaned container to be removed", func() (bool, error) {
						return len(eng.Containers(t, supervise.LabelRunID+"="+orphanID, true)) == 0, nil
					})
				},
			},
			{
				Config: dockerConfig(wsDir, eng.BaseImage, "", "", ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("aml_experiment_run.cancel", plancheck.ResourceActionDestroy),
				}},
				Check: func(s *terraform.State) error {
					if left := eng.Containers(t, supervise.LabelRunID+"="+cancelID, true); len(left) > 0 {
						return fmt.Errorf("destroy left containers %v of run %s", left, cancelID)
					}
					for id, want := range map[string]run.Status{cancelID: run.Canceled, orphanID: run.Failed} {
						st, err := storedStatus(t, wsDir, id)
						if err != nil {
							return err
						}
						if st != want {
							return fmt.Errorf("run %s is %s, want %s", id, st, want)
						}
					}
					return nil
				},
			},
		},
	})
}

// An SSH host whose Docker engine is the test's (the test sshd runs on this
// machine; its sessions get DOCKER_HOST): the probe sees Docker, the run
// executes in a container there as the host's user.
func TestAccDocker_sshHost(t *testing.T) {
	testAccPreCheck(t)
	eng := dockertest.Shared(t)
	srv := sshd.Start(t, sshd.Options{SessionEnv: map[string]string{"DOCKER_HOST": eng.Host}})
	version, err := eng.Docker(context.Background(), "version", "--format", "{{.Server.Version}}")
	if err != nil {
		t.Fatal(err)
	}
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": containerScript})
	host := fmt.Sprintf(`
resource "aml_remote_compute" "host" {
  workspace_id = aml_workspace.ws.id
  name         = "docker-host"
  address      = "127.0.0.1"
  ssh_port     = %d
  username     = %q
  private_key  = %q
  force_detach = true
}
`, srv.Port, srv.User, string(srv.KeyPEM))
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: dockerConfig(wsDir, eng.BaseImage, "", host, dockerRun("remote", src, "aml_remote_compute.host.name", "")),
			ConfigStateChecks: append(inContainer("aml_experiment_run.remote"),
				statecheck.ExpectKnownValue("aml_remote_compute.host", tfjsonpath.New("docker_available"), knownvalue.Bool(true)),
				statecheck.ExpectKnownValue("aml_remote_compute.host", tfjsonpath.New("docker_version"), knownvalue.StringExact(version)),
				statecheck.ExpectKnownValue("aml_remote_compute.host", tfjsonpath.New("docker_problem"), knownvalue.StringExact(""))),
			Check: resource.ComposeAggregateTestCheckFunc(
				noContainers(eng, t, "aml_experiment_run.remote"),
				resource.TestCheckResourceAttrWith("aml_experiment_run.remote", "metrics.uid", func(v string) error {
					if v == "0" {
						return fmt.Errorf("the container ran as root, not as the host's user %s", srv.User)
					}
					return nil
				}),
			),
		}},
	})
}

// A managed pool's node runs the run in a container.
func TestAccDocker_pool(t *testing.T) {
	testAccPreCheck(t)
	eng := dockertest.Shared(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": containerScript})
	pool := `
resource "aml_compute" "cpu" {
  workspace_id                  = aml_workspace.ws.id
  name                          = "docker-pool"
  vm_size                       = "standard_d1_v2"
  min_nodes                     = 0
  max_nodes                     = 1
  idle_seconds_before_scaledown = 60
  force_destroy                 = true
}
`
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config:            dockerConfig(wsDir, eng.BaseImage, "", pool, dockerRun("pooled", src, "aml_compute.cpu.name", "")),
			ConfigStateChecks: inContainer("aml_experiment_run.pooled"),
			Check:             noContainers(eng, t, "aml_experiment_run.pooled"),
		}},
	})
}

// Bad Docker options fail the plan, naming the attribute, the value and what
// is valid; nothing needs an engine.
func TestAccDocker_badInput(t *testing.T) {
	testAccPreCheck(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	cfg := func(docker string) string {
		return fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name            = "acc-docker-bad"
  storage_path    = %q
  deletion_policy = "DELETE"
}

resource "aml_run_configuration" "bad" {
  workspace_id = aml_workspace.ws.id
  name         = "bad"
  environment {
    docker {
      enabled    = true
      base_image = "python:3.11"
      %s
    }
  }
}
`, wsDir, docker)
	}
	steps := []resource.TestStep{}
	for _, tc := range []struct {
		docker string
		want   []string // phrases, in order
	}{
		{`arguments = ["--privileged"]`, []string{"environment.docker.arguments[0]", `"--privileged" is not an allowed docker run flag; allowed: --add-host`}},
		{`arguments = ["--volume", "/:/host"]`, []string{`"--volume" is not an allowed docker run flag`, "raw_arguments"}},
		{`arguments = ["--name=x"]`, []string{`"--name=x" cannot be given`}},
		{`shm_size = "2 GB"`, []string{"environment.docker.shm_size", `"2 GB" is not a size`}},
		{`network = "container:db"`, []string{"environment.docker.network", `"container:db" is not a network name`}},
		{`gpus = "many"`, []string{"environment.docker.gpus", `"many" is not valid: use all, none or a number`}},
		{"registry {\n address = \"r.example\"\n username = \"u\"\n }", []string{"environment.docker.registry.password", "together"}},
	} {
		parts := make([]string, len(tc.want))
		for i, p := range tc.want {
			parts[i] = wrapped(p).String()
		}
		steps = append(steps, resource.TestStep{Config: cfg(tc.docker), PlanOnly: true, ExpectError: regexp.MustCompile(strings.Join(parts, `[\s\S]*`))})
	}
	resource.UnitTest(t, resource.TestCase{ProtoV6ProviderFactories: testAccProtoV6ProviderFactories, Steps: steps})
}

// A provider killed while its Docker run is running: the run's container goes
// on (the script's hostname is the labelled container's id), the next apply
// adopts the run, sees it complete and submits nothing again (one run, one run
// directory), and no container is left.
func TestAccDocker_adoptAfterProviderKilled(t *testing.T) {
	testAccPreCheck(t)
	eng := dockertest.Shared(t)
	t.Parallel()
	var container string
	prelude := func(wsDir string) string { return dockerConfig(wsDir, eng.BaseImage, "", "", "") }
	head := `import os, socket
with open(os.path.join(os.environ["AML_OUTPUTS_DIR"], "host.txt"), "w") as f:
    f.write(socket.gethostname())
SLOW = 8
`
	testAdoptionWithHook(t, prelude, "run_configuration_id = aml_run_configuration.docker.id", head, true, func(wsDir, runID string) {
		if err := waitRunningContainer(eng, t, runID); err != nil {
			t.Fatal(err)
		}
		container = eng.Containers(t, supervise.LabelRunID+"="+runID, false)[0]
		hostFile := filepath.Join(wsDir, "runs", runID, "outputs", "host.txt")
		var b []byte
		if err := testutil.Poll(30*time.Second, "the script to write its hostname", func() (bool, error) {
			var err error
			b, err = os.ReadFile(hostFile)
			return err == nil && len(b) >= 12, nil
		}); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(container, string(b)) {
			t.Fatalf("the run's script runs in container %q, not in its labelled container %s", b, container)
		}
		t.Cleanup(func() {
			if left := eng.Containers(t, supervise.LabelRunID+"="+runID, true); len(left) > 0 {
				t.Errorf("containers left: %v", left)
			}
		})
	})
}

// Registry credentials: Sensitive in state, never in a run's files, and a new
// password updates the configuration in place (no run is replaced).
func TestAccDocker_registryPasswordRotation(t *testing.T) {
	testAccPreCheck(t)
	eng := dockertest.Shared(t)
	wsDir := filepath.Join(t.TempDir(), "ws")
	src := newSourceDir(t, map[string]string{"train.py": containerScript})
	cfg := func(password string) string {
		return fmt.Sprintf(`
resource "aml_workspace" "ws" {
  name            = "acc-docker-registry"
  storage_path    = %q
  deletion_policy = "DELETE"
}

resource "aml_run_configuration" "docker" {
  workspace_id = aml_workspace.ws.id
  name         = "private"
  environment {
    python {
      user_managed_dependencies = true
    }
    docker {
      enabled    = true
      base_image = %q
      registry {
        address  = "registry.example:5000"
        username = "ci-bot"
        password = %q
      }
    }
  }
}
`, wsDir, eng.BaseImage, password) + dockerRun("private", src, "", "")
	}
	noPassword := func(pw string) resource.TestCheckFunc {
		return func(s *terraform.State) error {
			id, err := stateAttr(s, "aml_experiment_run.private", "run_id")
			if err != nil {
				return err
			}
			return filepath.WalkDir(filepath.Join(wsDir, "runs", id), func(p string, de os.DirEntry, err error) error {
				if err != nil || !de.Type().IsRegular() {
					return err
				}
				if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(pw)) {
					return fmt.Errorf("%s holds the registry password", p)
				}
				return nil
			})
		}
	}
	resource.ParallelTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:            cfg("first-secret-0815"),
				ConfigStateChecks: inContainer("aml_experiment_run.private"),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("aml_run_configuration.docker", "environment.docker.registry.password", "first-secret-0815"),
					noPassword("first-secret-0815"),
				),
			},
			{
				Config: cfg("second-secret-4711"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("aml_run_configuration.docker", plancheck.ResourceActionUpdate),
					plancheck.ExpectResourceAction("aml_experiment_run.private", plancheck.ResourceActionNoop),
				}},
				Check: resource.TestCheckResourceAttr("aml_run_configuration.docker", "environment.docker.registry.password", "second-secret-4711"),
			},
			{
				ResourceName:      "aml_run_configuration.docker",
				ImportState:       true,
				ImportStateIdFunc: importIDFromState("aml_run_configuration.docker"),
				ImportStateVerify: true,
			},
		},
	})
}
