# A workspace is imported by its id (the UUID in its id attribute, also shown
# by `terraform state show`), or by its name when it is in the default place
# (.aml/workspaces/<name> under the working directory).
terraform import aml_workspace.ws 0f8fad5b-d9cb-469f-a165-70867728950e
terraform import aml_workspace.ws quickstart
