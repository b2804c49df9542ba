resource "aml_workspace" "ws" {
  name = "quickstart"
}

variable "login_private_key" {
  description = "The SSH private key of the login node's user."
  type        = string
  sensitive   = true
}

variable "login_host_key" {
  description = "The login node's host key (ssh-ed25519 AAAA...)."
  type        = string
}

# A Slurm cluster, submitted to through its login node. shared_root is seen by
# every node (NFS, Lustre, ...): runs are staged there once, and all ranks of a
# run share its directory.
resource "aml_batch_attachment" "hpc" {
  workspace_id = aml_workspace.ws.id
  name         = "mybatchcompute"
  partition    = "gpu"
  account      = "ml-team"
  qos          = "normal"
  shared_root  = "/shared/aml"

  login {
    address     = "login.hpc.example"
    username    = "trainer"
    private_key = var.login_private_key
    host_key    = var.login_host_key
  }
}

# Two nodes, one GPU each; a preempted or node-failed run is requeued (twice at
# most), keeping its outputs directory, so a checkpoint written there survives.
resource "aml_run_configuration" "ddp" {
  workspace_id             = aml_workspace.ws.id
  name                     = "ddp-2"
  node_count               = 2
  communicator             = "Nccl"
  max_run_duration_seconds = 7200

  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "/shared/envs/torch/bin/python"
    }
  }

  slurm {
    cpus_per_node   = 8
    memory_per_node = "32G"
    gpus_per_node   = 1
    sbatch_options  = ["--constraint=a100"]
    max_retries     = 2
  }
}

resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "ddp"
  source_directory     = "${path.module}/src"
  script               = "train.py"
  compute_target       = aml_batch_attachment.hpc.name
  run_configuration_id = aml_run_configuration.ddp.id
}

output "slurm_job" {
  value = aml_experiment_run.train.slurm_job_id
}
