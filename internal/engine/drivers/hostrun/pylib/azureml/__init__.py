# terraform-provider-aml's stand-in for the azureml namespace, used only when
# no real azureml-core is installed. Like the real one it is a pkgutil
# namespace package; its own directory goes last on the search path, so a
# real azureml.core (or any other azureml.* package) installed in the run's
# Python is always found first and this stand-in is never used in its place.
import os as _os

__path__ = __import__("pkgutil").extend_path(__path__, __name__)
_here = _os.path.dirname(_os.path.abspath(__file__))
__path__ = [p for p in __path__ if _os.path.abspath(p) != _here] + [_here]
