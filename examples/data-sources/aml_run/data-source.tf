variable "baseline_run_id" {
  description = "Run to compare new training runs against."
  type        = string
}

data "aml_workspace" "ws" {
  name = "quickstart"
}

# One run by id, with its final metrics. Reading a finished run only reads the
# workspace store; a run that is still active is asked for its live status.
data "aml_run" "baseline" {
  workspace_id = data.aml_workspace.ws.id
  run_id       = var.baseline_run_id
}

output "baseline" {
  value = {
    experiment   = data.aml_run.baseline.experiment_name
    status       = data.aml_run.baseline.status
    exit_code    = data.aml_run.baseline.exit_code
    accuracy     = data.aml_run.baseline.metrics["accuracy"]
    started      = data.aml_run.baseline.start_time
    finished     = data.aml_run.baseline.end_time
    output_files = data.aml_run.baseline.output_files
    outputs_path = data.aml_run.baseline.outputs_path
  }
}

# The loss curve of the baseline: every value it logged, in order.
output "baseline_loss_curve" {
  value = [for v in data.aml_run.baseline.metric_history : { step = v.step, loss = v.value } if v.name == "loss"]
}
