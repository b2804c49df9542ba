# A remote compute target is imported by {workspace_id}/targets/{name}; its
# credentials are read back from the workspace.
terraform import aml_remote_compute.dsvm /home/me/project/.aml/workspaces/quickstart/targets/attach-dsvm
