resource "aml_workspace" "ws" {
  name = "quickstart"
}

# User-managed: run with an interpreter that is already set up on the target.
resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "user-python"
  framework    = "Python"

  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "python3"
    }
  }

  environment_variables = {
    EPOCHS = "30"
  }

  max_run_duration_seconds = 3600
}

# System-managed: the provider builds a Python environment from this spec once
# per environment_hash, on each target that needs it, and reuses it for every
# later run with the same hash.
resource "aml_run_configuration" "sklearn" {
  workspace_id = aml_workspace.ws.id
  name         = "sklearn"
  framework    = "Python"

  environment {
    python {
      user_managed_dependencies = false
      conda_dependencies {
        python_version = "3.11"
        pip_packages   = ["scikit-learn==1.5.2", "pandas>=2.2"]
        pip_options {
          index_url        = "https://pypi.org/simple"
          extra_index_urls = ["https://pypi.example.com/simple"]
          find_links       = ["/srv/wheels"]
        }
      }
    }
  }

  max_run_duration_seconds = 7200
}

# Distributed training on two nodes of a managed pool, inside a container.
# System-managed with Docker: the pip packages are built into an image
# FROM base_image once per environment_hash (tagged aml-env:<key>) and every
# later run starts from it. The ranks find each other on 127.0.0.1, so they
# share the host's network.
resource "aml_run_configuration" "ddp" {
  workspace_id = aml_workspace.ws.id
  name         = "torch-ddp"
  framework    = "Python"
  communicator = "Gloo"
  node_count   = 2

  environment {
    python {
      user_managed_dependencies = false
      conda_dependencies {
        pip_packages = ["torch==2.5.1", "numpy==1.26.4"]
      }
    }
    docker {
      enabled    = true
      base_image = "python:3.11-slim"
      shm_size   = "2g"
      network    = "host"
      arguments  = ["--cpus", "2", "--memory=8g"]
    }
  }

  environment_variables = {
    OMP_NUM_THREADS = "1"
  }

  max_run_duration_seconds = 14400
}

# A private image, pulled with credentials when the target lacks it; the
# script runs with the image's own interpreter (user-managed).
variable "registry_password" {
  type      = string
  sensitive = true
  default   = ""
}

resource "aml_run_configuration" "private_image" {
  workspace_id = aml_workspace.ws.id
  name         = "private-image"

  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "/opt/conda/bin/python"
    }
    docker {
      enabled       = true
      base_image    = "registry.example.com:5000/ml/train:2024.10"
      gpus          = "all"
      raw_arguments = ["--ipc=host"] # passed as is: trusted code only
      registry {
        address  = "registry.example.com:5000"
        username = "ci-bot"
        password = var.registry_password
      }
    }
  }
}

# PySpark: for runs on a Spark cluster attached with aml_hdinsight_attachment.
resource "aml_run_configuration" "spark" {
  workspace_id = aml_workspace.ws.id
  name         = "pyspark"
  framework    = "PySpark"

  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "python3"
    }
  }
}

output "sklearn_environment_hash" {
  value = aml_run_configuration.sklearn.environment_hash
}
