# A Spark attachment is imported by {workspace_id}/targets/{name}; its
# credentials are read back from the workspace.
terraform import aml_hdinsight_attachment.spark /home/me/project/.aml/workspaces/quickstart/targets/myhdi
