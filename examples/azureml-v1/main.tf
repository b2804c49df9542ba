# An Azure ML SDK v1 training script (src/train.py: `from azureml.core import
# Run`, `Run.get_context()`, `run.log(...)`, `run.upload_file(...)`) run
# unchanged on the machine running Terraform, as a sweep of three learning
# rates; aml_runs picks the best one in HCL.

terraform {
  required_providers {
    aml = {
      source = "openaml/aml"
    }
  }
}

provider "aml" {}

variable "learning_rates" {
  description = "The sweep: one run per learning rate."
  type        = list(string)
  default     = ["0.01", "0.1", "1.0"]
}

resource "aml_workspace" "ws" {
  name = "azureml-v1"
}

# The script needs only the standard library, so the python3 you have does.
resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "python"

  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "python3"
    }
  }
}

resource "aml_experiment_run" "sweep" {
  for_each             = toset(var.learning_rates)
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "logreg-sweep"
  source_directory     = "${path.module}/src"
  script               = "train.py"
  arguments            = ["--learning-rate", each.key]
  run_configuration_id = aml_run_configuration.py.id
  tags                 = { sweep = "learning-rate", learning_rate = each.key }
}

# The sweep's runs, best accuracy first (run records stay as history, so this
# also holds earlier sweeps' runs with the same tags).
data "aml_runs" "sweep" {
  workspace_id    = aml_workspace.ws.id
  experiment_name = "logreg-sweep"
  statuses        = ["Completed"]
  tags            = { sweep = "learning-rate" }
  order_by        = "metric:accuracy"
  descending      = true
  depends_on      = [aml_experiment_run.sweep]
}

output "best" {
  value = {
    run_id        = data.aml_runs.sweep.runs[0].run_id
    learning_rate = data.aml_runs.sweep.runs[0].tags["learning_rate"]
    accuracy      = data.aml_runs.sweep.runs[0].metrics["accuracy"]
    model         = "${data.aml_runs.sweep.runs[0].outputs_path}/model.json"
  }
}

output "accuracies" {
  value = { for lr, r in aml_experiment_run.sweep : lr => r.metrics["accuracy"] }
}
