# An experiment run is imported by "<workspace_id>/runs/<run_id>", where
# <workspace_id> is the absolute path of the workspace directory. Import reads
# the run's record from the workspace; it never submits a run.
terraform import aml_experiment_run.train "/home/me/project/.aml/workspaces/quickstart/runs/${RUN_ID}"
