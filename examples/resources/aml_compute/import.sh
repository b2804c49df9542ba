# A managed pool is imported by {workspace_id}/targets/{name}.
terraform import aml_compute.cpu /home/me/project/.aml/workspaces/quickstart/targets/cpu-cluster
