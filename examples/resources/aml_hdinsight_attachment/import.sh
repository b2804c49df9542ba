# A Spark attachment is imported by {workspace_id}/targets/{name} (workspace_id: the workspace UUID); its
# credentials are read back from the workspace.
terraform import aml_hdinsight_attachment.spark 0f8fad5b-d9cb-469f-a165-70867728950e/targets/myhdi
