resource "aml_workspace" "ws" {
  name = "quickstart"
}

resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "user-python"
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "python3"
    }
  }
}

variable "private_key" {
  description = "The trainer's SSH private key (PEM or OpenSSH format)."
  type        = string
  sensitive   = true
}

variable "bastion_private_key" {
  description = "The jump host's SSH private key."
  type        = string
  sensitive   = true
}

resource "aml_remote_compute" "dsvm" {
  workspace_id = aml_workspace.ws.id
  name         = "attach-dsvm"
  address      = "10.0.0.12"
  ssh_port     = 22
  username     = "trainer"
  private_key  = var.private_key # e.g. file("~/.ssh/id_ed25519")

  # Optional: without host_key the first key seen is pinned in state.
  host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG3mvrPyJ7yZ0z5j0y6+qgRjPq3Wb2e7o3lLx0w2b5yQ"

  # Optional: reach the host through a jump host.
  bastion {
    address     = "jump.example.com"
    username    = "ops"
    private_key = var.bastion_private_key
  }
}

# The same run as on `local`, sent to the attached host.
resource "aml_experiment_run" "train_remote" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "iris"
  source_directory     = "${path.module}/src"
  script               = "train.py"
  compute_target       = aml_remote_compute.dsvm.name
  run_configuration_id = aml_run_configuration.py.id
}
