"""A small azureml.core for Azure ML SDK v1 training scripts run by terraform-provider-aml.

Only the part of the SDK a training script uses inside a run: Run.get_context()
is the current run. Metrics go to the run's metrics and metric history, tags to
its script_tags, uploaded files to its outputs. What has no meaning on a
machine you own (workspaces, datastores, submitting runs) raises a clear error
or does nothing, as documented on each.
"""
from azureml.core.run import Run, Experiment, Workspace, ScriptRunConfig, Environment, RunConfiguration

__version__ = "0.0.0+aml"
__all__ = ["Run", "Experiment", "Workspace", "ScriptRunConfig", "Environment", "RunConfiguration"]
