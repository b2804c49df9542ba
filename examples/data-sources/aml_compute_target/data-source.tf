resource "aml_workspace" "ws" {
  name = "quickstart"
}

resource "aml_compute" "cpu" {
  workspace_id = aml_workspace.ws.id
  name         = "cpu-cluster"
  vm_size      = "STANDARD_D1_V2"
  max_nodes    = 2
}

data "aml_compute_target" "cpu" {
  workspace_id = aml_workspace.ws.id
  name         = aml_compute.cpu.name
}

output "busy_nodes" {
  value = data.aml_compute_target.cpu.node_state_counts.running
}
