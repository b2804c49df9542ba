resource "aml_workspace" "ws" {
  name = "quickstart"
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

  max_run_duration_seconds = 3600
}

variable "dataset_version" {
  description = "Bump to retrain although no file in src/ changed."
  type        = string
  default     = "2024-06"
}

# Snapshots src/ at plan time, runs `python3 train.py --C 1.0` on the machine
# running Terraform during apply, and waits for it to finish.
resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "iris"
  source_directory     = "${path.module}/src"
  script               = "train.py"
  arguments            = ["--C", "1.0"]
  compute_target       = "local"
  run_configuration_id = aml_run_configuration.py.id

  environment_variables = {
    EPOCHS = "30"
  }

  # Any change to these values submits a new run.
  triggers = {
    dataset_version = var.dataset_version
  }

  tags = {
    owner = "ml-platform"
  }

  timeouts = {
    create = "30m"
    delete = "5m"
  }

  # Fail the apply, and keep dependants from using the model, unless the run
  # is good enough.
  lifecycle {
    postcondition {
      condition     = self.metrics["accuracy"] >= 0.9
      error_message = "Test accuracy ${self.metrics["accuracy"]} is below 0.9 (run ${self.run_id}, log ${self.log_path})."
    }
  }
}

# A command instead of a script. allow_failure records a failed run in state
# (status, exit_code, failure_reason, log_tail) instead of failing the apply.
resource "aml_experiment_run" "evaluate" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "iris-eval"
  source_directory     = "${path.module}/src"
  command              = ["python3", "evaluate.py", "--model", "${aml_experiment_run.train.outputs_path}/model.json"]
  compute_target       = "local"
  run_configuration_id = aml_run_configuration.py.id
  allow_failure        = true
}

output "accuracy" {
  value = aml_experiment_run.train.metrics["accuracy"]
}

output "model" {
  value = "${aml_experiment_run.train.outputs_path}/model.json"
}

output "evaluation" {
  value = {
    status         = aml_experiment_run.evaluate.status
    exit_code      = aml_experiment_run.evaluate.exit_code
    failure_reason = aml_experiment_run.evaluate.failure_reason
  }
}
