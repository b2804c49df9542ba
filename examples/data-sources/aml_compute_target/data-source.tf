data "aml_compute_target" "cpu" {
  workspace_id = aml_workspace.ws.id
  name         = "cpu-cluster"
}

output "busy_nodes" {
  value = data.aml_compute_target.cpu.node_state_counts.running
}
