# A run configuration is imported by "<workspace_id>/runconfigs/<name>", where
# <workspace_id> is the absolute path of the workspace directory.
terraform import aml_run_configuration.py /home/me/project/.aml/workspaces/quickstart/runconfigs/user-python
