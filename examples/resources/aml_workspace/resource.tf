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
# configurations can share its runs. force_destroy lets `terraform destroy`
# remove it even though it still holds run history.
resource "aml_workspace" "shared" {
  name          = "shared"
  storage_path  = "/srv/aml/workspaces/shared"
  force_destroy = true
}

output "workspace_dir" {
  value = aml_workspace.ws.id
}
