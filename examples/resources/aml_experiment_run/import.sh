# An experiment run is imported by "<workspace_id>/runs/<run_id>", where
# <workspace_id> is the workspace's id (a UUID; no machine path). Import reads
# the run's record from the workspace; it never submits a run.
terraform import aml_experiment_run.train "0f8fad5b-d9cb-469f-a165-70867728950e/runs/${RUN_ID}"
