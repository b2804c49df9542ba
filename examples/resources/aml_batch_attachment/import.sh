# A Slurm attachment is imported by {workspace_id}/targets/{name}; the login
# node's credentials are read back from the workspace.
terraform import aml_batch_attachment.hpc /home/me/project/.aml/workspaces/quickstart/targets/mybatchcompute
