"""aml_run: log metrics from a training script run by terraform-provider-aml.

It never raises for a value: a training job that logs a NaN loss goes on. A
value that is not a finite number is written as a null record, which the
engine drops and counts in the run's message.
"""
import json
import math
import os
import sys
import time

__all__ = ["log", "log_list", "log_row", "tag", "outputs_dir", "run_id", "experiment_name"]

_warned = set()


def run_id():
    return os.environ.get("AML_RUN_ID", "")


def experiment_name():
    return os.environ.get("AML_EXPERIMENT_NAME", "")


def outputs_dir():
    return os.environ.get("AML_OUTPUTS_DIR", "outputs")


def _number(x):
    try:
        x = float(x)
    except (TypeError, ValueError, OverflowError):
        return None
    if math.isnan(x) or math.isinf(x):
        return None
    return x


def _append(var, rec):
    path = os.environ.get(var)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
    except OSError as e:
        if var not in _warned:
            _warned.add(var)
            print("aml_run: cannot write %s (%s): %s" % (var, path, e), file=sys.stderr)


def log(name, value, step=None):
    """Record one value of a metric; the run's metrics attribute keeps the last.

    A value that is not a finite number is not recorded (the run's message
    counts it); this never raises for a value."""
    v = _number(value)
    rec = {"name": str(name), "value": v, "time": time.time()}
    if v is None:
        rec["dropped"] = repr(value)[:100]
        if name not in _warned:
            _warned.add(name)
            print("aml_run: metric %r: %r is not a finite number; not recorded" % (name, value), file=sys.stderr)
    if step is not None:
        s = _number(step)
        if s is not None:
            rec["step"] = s
    _append("AML_METRICS_FILE", rec)


def log_list(name, values):
    """Record a list of values of one metric, with steps 0, 1, ..."""
    for i, value in enumerate(values):
        log(name, value, step=i)


def log_row(step=None, **values):
    for name, value in values.items():
        log(name, value, step)


def tag(key, value=""):
    """Set a tag of the run (its script_tags attribute); a later value replaces an earlier one."""
    if value is None:
        value = ""
    _append("AML_TAGS_FILE", {"key": str(key), "value": str(value)})
