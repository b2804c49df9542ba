# A workspace is imported by its id: the absolute path of the workspace directory.
terraform import aml_workspace.ws /home/me/project/.aml/workspaces/quickstart
