# By name: the workspace in .aml/workspaces/<name> under the working directory.
data "aml_workspace" "quickstart" {
  name = "quickstart"
}

# By directory: a workspace that another configuration manages.
data "aml_workspace" "shared" {
  storage_path = "/srv/aml/workspaces/shared"
}

output "quickstart_runs" {
  value = data.aml_workspace.quickstart.run_count
}

output "shared_workspace" {
  value = {
    id          = data.aml_workspace.shared.id
    description = data.aml_workspace.shared.description
    tags        = data.aml_workspace.shared.tags
  }
}
