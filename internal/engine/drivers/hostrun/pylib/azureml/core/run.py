"""Run.get_context() for Azure ML SDK v1 scripts run by terraform-provider-aml."""
import os
import shutil
import sys

import aml_run

__all__ = ["Run", "Experiment", "Workspace", "ScriptRunConfig", "Environment", "RunConfiguration"]

_warned = set()


def _noop(what):
    if what not in _warned:
        _warned.add(what)
        print("azureml.core (terraform-provider-aml): %s has no effect here" % what, file=sys.stderr)


class _NotHere(object):
    """Azure ML objects that only exist in an Azure workspace."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            "azureml.core.%s is not available inside a terraform-provider-aml run: "
            "define workspaces, environments and submissions in Terraform "
            "(aml_workspace, aml_run_configuration, aml_experiment_run)" % type(self).__name__)

    @classmethod
    def from_config(cls, *args, **kwargs):
        cls()

    @classmethod
    def get(cls, *args, **kwargs):
        cls()


class Workspace(_NotHere):
    pass


class ScriptRunConfig(_NotHere):
    pass


class Environment(_NotHere):
    pass


class RunConfiguration(_NotHere):
    pass


class Experiment(object):
    """The experiment a run belongs to (its name); it cannot submit runs here."""

    def __init__(self, workspace=None, name=None, **kwargs):
        self.name = name if name is not None else aml_run.experiment_name()
        self.workspace = workspace

    def submit(self, *args, **kwargs):
        raise RuntimeError("Experiment.submit is not available inside a terraform-provider-aml run: "
                           "submit runs with aml_experiment_run in Terraform")

    def __repr__(self):
        return "Experiment(Name: %s)" % self.name


def _outputs_dest(name):
    """Where an uploaded artifact goes: outputs/<name> (a leading outputs/ is the same place)."""
    rel = os.path.normpath(str(name).replace("\\", "/")).lstrip("/")
    if rel == "outputs" or rel.startswith("outputs" + os.sep):
        rel = rel[len("outputs"):].lstrip(os.sep)
    if rel in ("", ".") or rel == ".." or rel.startswith(".." + os.sep):
        raise ValueError("artifact name %r must be a relative path" % (name,))
    return os.path.join(aml_run.outputs_dir(), rel)


class Run(object):
    """The current run (Run.get_context()). Metrics, tags and uploads go into the run's record."""

    _current = None

    def __init__(self, experiment=None, run_id=None, **kwargs):
        self.id = run_id if run_id is not None else aml_run.run_id()
        self.experiment = experiment if experiment is not None else Experiment()
        self.display_name = self.id
        self.number = 0
        self.parent = None
        self.properties = {}
        self.tags = {}
        self.input_datasets = {}
        self._rows = {}

    # -- the run ---------------------------------------------------------
    @classmethod
    def get_context(cls, allow_offline=True, **kwargs):
        if cls._current is None:
            cls._current = cls()
        return cls._current

    def __repr__(self):
        return "Run(Experiment: %s, Id: %s)" % (self.experiment.name, self.id)

    def get_status(self):
        return "Running"

    def get_details(self):
        return {"runId": self.id, "status": "Running", "properties": dict(self.properties), "tags": dict(self.tags)}

    # -- metrics ---------------------------------------------------------
    def log(self, name, value, description="", step=None):
        """One value of a metric (metrics keeps the last, metric_history every one)."""
        aml_run.log(name, value, step=step)

    def log_list(self, name, value, description=""):
        """A list of values of one metric, with steps 0, 1, ..."""
        aml_run.log_list(name, value)

    def log_row(self, name, description=None, **kwargs):
        """A row of table `name`: each column is metric `name/column`, the row number its step."""
        step = self._rows.get(name, 0)
        self._rows[name] = step + 1
        for col, value in kwargs.items():
            aml_run.log("%s/%s" % (name, col), value, step=step)

    def log_table(self, name, value, description=""):
        """A table {column: [values]}: each column is metric `name/column` with steps 0, 1, ..."""
        for col, values in dict(value).items():
            aml_run.log_list("%s/%s" % (name, col), values)

    def log_image(self, name, path=None, plot=None, description=""):
        """An image: a file (path) or a matplotlib figure (plot) is saved to outputs/<name>.png."""
        dest = _outputs_dest(name if name.lower().endswith(".png") else name + ".png")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if path is not None:
            shutil.copyfile(path, dest)
        elif plot is not None:
            plot.savefig(dest)

    def log_confusion_matrix(self, name, value, description=""):
        _noop("Run.log_confusion_matrix")

    def log_accuracy_table(self, name, value, description=""):
        _noop("Run.log_accuracy_table")

    def log_residuals(self, name, value, description=""):
        _noop("Run.log_residuals")

    def log_predictions(self, name, value, description=""):
        _noop("Run.log_predictions")

    def get_metrics(self, name=None, **kwargs):
        """What this process logged so far, {name: value or [values]}."""
        out = {}
        path = os.environ.get("AML_METRICS_FILE")
        if path and os.path.isfile(path):
            import json
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("value") is None:
                        continue
                    out.setdefault(rec["name"], []).append(rec["value"])
        out = {k: (v[0] if len(v) == 1 else v) for k, v in out.items()}
        return out if name is None else {name: out[name]} if name in out else {}

    def flush(self, *args, **kwargs):
        pass

    # -- tags and properties ---------------------------------------------
    def tag(self, key, value=None):
        """A tag of the run (script_tags); a tag without a value is an empty string."""
        self.tags[key] = "" if value is None else str(value)
        aml_run.tag(key, self.tags[key])

    def set_tags(self, tags):
        for k, v in dict(tags).items():
            self.tag(k, v)

    def get_tags(self):
        return dict(self.tags)

    def add_properties(self, properties):
        self.properties.update(properties)
        for k, v in dict(properties).items():
            aml_run.tag(k, v)

    def get_properties(self):
        return dict(self.properties)

    # -- files -----------------------------------------------------------
    def upload_file(self, name, path_or_stream, **kwargs):
        """Copy a file (or a readable stream) to outputs/<name>."""
        dest = _outputs_dest(name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if hasattr(path_or_stream, "read"):
            with open(dest, "wb") as f:
                shutil.copyfileobj(path_or_stream, f)
        elif os.path.abspath(path_or_stream) != os.path.abspath(dest):
            shutil.copyfile(path_or_stream, dest)

    def upload_files(self, names, paths, **kwargs):
        for n, p in zip(names, paths):
            self.upload_file(n, p)

    def upload_folder(self, name, path, **kwargs):
        """Copy a directory tree to outputs/<name>/."""
        dest = _outputs_dest(name) if str(name).strip("/") not in ("", "outputs") else aml_run.outputs_dir()
        for root, _, files in os.walk(path):
            for fn in files:
                src = os.path.join(root, fn)
                rel = os.path.relpath(src, path)
                d = os.path.join(dest, rel)
                os.makedirs(os.path.dirname(d), exist_ok=True)
                if os.path.abspath(src) != os.path.abspath(d):
                    shutil.copyfile(src, d)

    def get_file_names(self):
        out = []
        base = aml_run.outputs_dir()
        for root, _, files in os.walk(base):
            for fn in files:
                out.append("outputs/" + os.path.relpath(os.path.join(root, fn), base).replace(os.sep, "/"))
        return sorted(out)

    def download_file(self, name, output_file_path=None, **kwargs):
        src = _outputs_dest(name)
        shutil.copyfile(src, output_file_path or os.path.basename(src))

    # -- life cycle: the run's end is the script's exit ----------------
    def complete(self, *args, **kwargs):
        _noop("Run.complete (a run completes when its script exits 0)")

    def fail(self, *args, **kwargs):
        _noop("Run.fail (a run fails when its script exits non-zero)")

    def cancel(self, *args, **kwargs):
        _noop("Run.cancel (cancel a run by destroying it in Terraform)")

    def wait_for_completion(self, *args, **kwargs):
        return self.get_details()

    def child_run(self, *args, **kwargs):
        _noop("Run.child_run (metrics of a child run are the run's own)")
        return self

    def register_model(self, *args, **kwargs):
        _noop("Run.register_model (the model file is in the run's outputs)")
