# User-managed Python: train a small classifier on the machine running Terraform.
# `terraform apply` snapshots ./src, runs train.py with python3 and exposes the
# run's metrics and outputs as attributes. Editing src/train.py (or anything
# else in src/ that .amlignore does not exclude) makes the next plan replace
# the run, which re-executes it.

terraform {
  required_providers {
    aml = {
      source = "openaml/aml"
    }
  }
}

provider "aml" {}

variable "epochs" {
  description = "Training epochs, passed to train.py as the EPOCHS environment variable."
  type        = number
  default     = 30
}

resource "aml_workspace" "ws" {
  name = "user-python"
}

resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "user-python"
  framework    = "Python"

  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "python3"
    }
  }

  environment_variables = {
    EPOCHS = tostring(var.epochs)
  }

  max_run_duration_seconds = 3600
}

resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "iris"
  source_directory     = "${path.module}/src"
  script               = "train.py"
  arguments            = ["--C", "1.0"]
  compute_target       = "local"
  run_configuration_id = aml_run_configuration.py.id
}

output "accuracy" {
  value = aml_experiment_run.train.metrics["accuracy"]
}

output "loss" {
  value = aml_experiment_run.train.metrics["loss"]
}

output "run_id" {
  value = aml_experiment_run.train.run_id
}

output "status" {
  value = aml_experiment_run.train.status
}

output "output_files" {
  value = aml_experiment_run.train.output_files
}

output "outputs_path" {
  value = aml_experiment_run.train.outputs_path
}

output "log_tail" {
  # Sensitive in the resource so that a plan does not print the old run's log;
  # `terraform output -raw log_tail` prints it.
  value     = aml_experiment_run.train.log_tail
  sensitive = true
}
