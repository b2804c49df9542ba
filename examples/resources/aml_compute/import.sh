# A managed pool is imported by {workspace_id}/targets/{name} (workspace_id: the workspace UUID).
terraform import aml_compute.cpu 0f8fad5b-d9cb-469f-a165-70867728950e/targets/cpu-cluster
