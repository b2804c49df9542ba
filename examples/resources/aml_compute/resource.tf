resource "aml_workspace" "ws" {
  name = "quickstart"
}

resource "aml_run_configuration" "sklearn" {
  workspace_id = aml_workspace.ws.id
  name         = "sklearn"
  environment {
    python {
      conda_dependencies {
        python_version = "3.11"
        pip_packages   = ["scikit-learn==1.5.2"]
      }
    }
  }
}

resource "aml_compute" "cpu" {
  workspace_id                  = aml_workspace.ws.id
  name                          = "cpu-cluster"
  vm_size                       = "STANDARD_D2_V2"
  min_nodes                     = 0
  max_nodes                     = 4
  idle_seconds_before_scaledown = 120
}

# A hyperparameter sweep: four runs queue on the pool, which grows to
# max_nodes and runs them side by side.
resource "aml_experiment_run" "sweep" {
  for_each             = toset(["0.01", "0.1", "1", "10"])
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "sweep"
  source_directory     = "${path.module}/src"
  script               = "train.py"
  arguments            = ["--C", each.value]
  compute_target       = aml_compute.cpu.name
  run_configuration_id = aml_run_configuration.sklearn.id
}
