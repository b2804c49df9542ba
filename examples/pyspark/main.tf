# Trains a pyspark.ml model on a Spark cluster attached by its head node.
# terraform apply -var address=... -var username=... -var private_key_file=...
terraform {
  required_providers {
    aml = { source = "openaml/aml" }
  }
}

variable "address" {
  description = "The Spark head node (SSH)."
  type        = string
}

variable "ssh_port" {
  type    = number
  default = 22
}

variable "username" {
  type = string
}

variable "private_key_file" {
  description = "Path of the SSH private key for username."
  type        = string
}

variable "spark_master" {
  description = "yarn, local[*], spark://host:7077 ..."
  type        = string
  default     = "local[*]"
}

variable "python" {
  description = "The Python of the driver and executors (with numpy, for pyspark.ml)."
  type        = string
  default     = "python3"
}

resource "aml_workspace" "ws" {
  name = "pyspark"
}

resource "aml_hdinsight_attachment" "spark" {
  workspace_id = aml_workspace.ws.id
  name         = "spark-head"
  address      = var.address
  ssh_port     = var.ssh_port
  username     = var.username
  private_key  = file(var.private_key_file)
  spark_master = var.spark_master
}

resource "aml_run_configuration" "pyspark" {
  workspace_id = aml_workspace.ws.id
  name         = "pyspark"
  framework    = "PySpark"
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = var.python
    }
  }
  spark {
    configuration = { "spark.sql.shuffle.partitions" = "4" }
  }
}

resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "iris-spark"
  source_directory     = "${path.module}/src"
  script               = "train.py"
  arguments            = ["--reg", "0.01"]
  compute_target       = aml_hdinsight_attachment.spark.name
  run_configuration_id = aml_run_configuration.pyspark.id

  lifecycle {
    postcondition {
      condition     = self.metrics["accuracy"] >= 0.8
      error_message = "accuracy ${self.metrics["accuracy"]} is below 0.8"
    }
  }
}

output "spark_version" { value = aml_hdinsight_attachment.spark.spark_version }
output "application" { value = aml_experiment_run.train.spark_application_id }
output "accuracy" { value = aml_experiment_run.train.metrics["accuracy"] }
output "model" { value = "${aml_experiment_run.train.outputs_path}/model.json" }
