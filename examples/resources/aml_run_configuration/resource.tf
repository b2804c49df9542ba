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
# conda_packages need conda, mamba or micromamba on the target (here: in the image).
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
        python_version = "3.11"
        channels       = ["conda-forge"]
        conda_packages = ["numpy=1.26"]
        pip_packages   = ["torch==2.5.1"]
      }
    }
    docker {
      enabled    = true
      base_image = "mambaorg/micromamba:1.5-jammy"
      shm_size   = "2g"
      arguments  = ["--cpus", "2"]
    }
  }

  environment_variables = {
    OMP_NUM_THREADS = "1"
  }

  max_run_duration_seconds = 14400
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
