# Runs src/train.py as a 2-node Slurm job, submitted from this machine.
# terraform apply -var shared_root=/shared/aml
terraform {
  required_providers {
    aml = { source = "openaml/aml" }
  }
}

variable "shared_root" {
  description = "A directory every node of the cluster sees."
  type        = string
}

variable "partition" {
  type    = string
  default = null
}

resource "aml_workspace" "ws" {
  name = "slurm"
}

resource "aml_batch_attachment" "hpc" {
  workspace_id = aml_workspace.ws.id
  name         = "hpc"
  partition    = var.partition
  shared_root  = var.shared_root
}

resource "aml_run_configuration" "two_nodes" {
  workspace_id = aml_workspace.ws.id
  name         = "two-nodes"
  node_count   = 2
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "python3"
    }
  }
  slurm {
    max_retries = 1
  }
}

resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "slurm-train"
  source_directory     = "${path.module}/src"
  script               = "train.py"
  compute_target       = aml_batch_attachment.hpc.name
  run_configuration_id = aml_run_configuration.two_nodes.id
}

output "job" { value = aml_experiment_run.train.slurm_job_id }
output "loss" { value = aml_experiment_run.train.metrics["loss"] }
output "partitions" { value = aml_batch_attachment.hpc.partitions }
