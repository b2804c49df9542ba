data "aml_workspace" "ws" {
  name = "quickstart"
}

# The completed runs of a learning-rate sweep (runs tagged sweep = "lr"),
# best accuracy first.
data "aml_runs" "sweep" {
  workspace_id    = data.aml_workspace.ws.id
  experiment_name = "sweep"
  statuses        = ["Completed"]
  tags            = { sweep = "lr" }
  order_by        = "metric:accuracy"
  descending      = true
}

output "best_run" {
  value = length(data.aml_runs.sweep.runs) == 0 ? null : {
    run_id   = data.aml_runs.sweep.runs[0].run_id
    accuracy = data.aml_runs.sweep.runs[0].metrics["accuracy"]
    params   = data.aml_runs.sweep.runs[0].params
    outputs  = data.aml_runs.sweep.runs[0].outputs_path
  }
}

# Every accuracy of the sweep, for a comparison table.
output "accuracies" {
  value = { for r in data.aml_runs.sweep.runs : r.run_id => lookup(r.metrics, "accuracy", null) }
}
