# A workspace in the default place: .aml/workspaces/quickstart under the
# directory Terraform runs in.
resource "aml_workspace" "ws" {
  name        = "quickstart"
  description = "Iris experiments"

  tags = {
    team = "ml-platform"
  }
}

# A workspace kept outside the working directory, so that several Terraform
# configurations can share its runs. deletion_policy = "DELETE" lets
# `terraform destroy` remove it with its run history (the default,
# KEEP_HISTORY, keeps a workspace that holds runs on disk; PREVENT refuses).
resource "aml_workspace" "shared" {
  name            = "shared"
  storage_path    = "/srv/aml/workspaces/shared"
  deletion_policy = "DELETE"
}

# A workspace in the provider's shared_backend (PostgreSQL + an S3-compatible
# bucket), for teams and CI: found by name from every machine.
resource "aml_workspace" "team" {
  name    = "team"
  backend = "shared"
}

output "workspace_dir" {
  value = aml_workspace.ws.id
}
