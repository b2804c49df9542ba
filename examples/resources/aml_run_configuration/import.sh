# A run configuration is imported by "<workspace_id>/runconfigs/<name>", where
# <workspace_id> is the workspace's id (a UUID; no machine path).
terraform import aml_run_configuration.py 0f8fad5b-d9cb-469f-a165-70867728950e/runconfigs/user-python
