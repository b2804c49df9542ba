resource "aml_workspace" "ws" {
  name = "quickstart"
}

variable "private_key" {
  description = "The SSH private key of the head node's user."
  type        = string
  sensitive   = true
}

variable "host_key" {
  description = "The head node's host key (ssh-ed25519 AAAA...)."
  type        = string
}

# A Spark cluster by its head node: a YARN edge node here. Attaching finds
# spark-submit and reads the Spark, Scala, Java and Hadoop versions.
resource "aml_hdinsight_attachment" "spark" {
  workspace_id = aml_workspace.ws.id
  name         = "myhdi"
  address      = "mycluster-ssh.example.com"
  username     = "sshuser"
  private_key  = var.private_key
  host_key     = var.host_key
  spark_home   = "/opt/spark"
  spark_master = "yarn"
  deploy_mode  = "client"
}

# PySpark runs: the interpreter must exist on every node of the cluster.
resource "aml_run_configuration" "pyspark" {
  workspace_id = aml_workspace.ws.id
  name         = "pyspark"
  framework    = "PySpark"

  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "/usr/bin/python3"
    }
  }

  spark {
    configuration = {
      "spark.executor.memory"    = "1g"
      "spark.executor.instances" = "2"
    }
  }
}

resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "iris-spark"
  source_directory     = "${path.module}/src"
  script               = "train.py"
  compute_target       = aml_hdinsight_attachment.spark.name
  run_configuration_id = aml_run_configuration.pyspark.id
}

output "spark_application" {
  value = aml_experiment_run.train.spark_application_id
}
