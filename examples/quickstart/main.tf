# Quickstart: train a scikit-learn model on the machine running Terraform.
#
# `terraform apply` builds a Python environment with scikit-learn (once: later runs
# with the same packages reuse it), snapshots ./src, runs train.py and exposes the
# run's metrics and outputs as attributes. Editing src/train.py (or anything else in
# src/ that .amlignore does not exclude) makes the next plan replace the run.

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
  default     = 20
}

resource "aml_workspace" "ws" {
  name = "quickstart"
}

resource "aml_run_configuration" "sklearn" {
  workspace_id = aml_workspace.ws.id
  name         = "sklearn"
  framework    = "Python"

  environment {
    python {
      user_managed_dependencies = false
      conda_dependencies {
        python_version = "3"
        pip_packages   = ["scikit-learn==1.5.*"]
      }
    }
  }

  environment_variables = {
    EPOCHS = tostring(var.epochs)
  }

  max_run_duration_seconds = 3600
}

resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "digits"
  source_directory     = "${path.module}/src"
  script               = "train.py"
  arguments            = ["--alpha", "0.0001"]
  compute_target       = "local"
  run_configuration_id = aml_run_configuration.sklearn.id

  lifecycle {
    postcondition {
      condition     = self.metrics["accuracy"] >= 0.9
      error_message = "The model's test accuracy fell below 0.9."
    }
  }
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

output "environment_cache_hit" {
  value = aml_experiment_run.train.environment_cache_hit
}

output "environment_build_seconds" {
  value = aml_experiment_run.train.environment_build_seconds
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
