"""ga: crystal and graphene microscope image classification on Keras 3 / TensorFlow.

The Python API (typed; each function's docstring has an example)::

    import ga
    ga.split("data/archive/cropped/cropped", "data/split")      # -> SplitResult
    run = ga.train("demo", training={"epochs": 3})               # -> Run (a run folder)
    rows = ga.load(run).predict("data/split/test", recursive=True)  # -> Predictions (rows)
    metrics = ga.evaluate("data/split/test", run)                # -> dict (metrics.json)
    result = ga.monitor("data/process", run)                     # -> MonitorResult (frames.csv ...)

Saved models hold the project's own Keras objects (the ``Preprocess`` layer, the per-class
metrics), which Keras must know by name before it loads them in safe mode.

- ``ga.register()`` registers them, importing Keras if needed; it is idempotent, and every
  part of ``ga`` that builds or loads a model calls it first.
- ``import ga`` is enough in a user's own code: with Keras already imported it registers at
  once, otherwise right after Keras's own import has run (looking Keras up without importing
  it, as TensorFlow does on start-up, changes nothing).

``import ga`` does not import TensorFlow itself, so the split and the synthetic data
generators start in a fraction of a second.
"""

import importlib.abc
import importlib.machinery
import os
import sys
import threading

__version__ = "0.1.0"

# TensorFlow's C++ start-up notes are not for users (GA_TF_NOTES=1 shows them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_lock = threading.Lock()

from ga.api import (  # noqa: E402  (after the env set-up)
    Predictions,
    Predictor,
    Run,
    calibrate,
    compare,
    cross_validate,
    evaluate,
    find_learning_rate,
    load,
    monitor,
    monitor_settings,
    review,
    scan_frames,
    split,
    train,
)

__all__ = ["train", "cross_validate", "find_learning_rate", "load", "evaluate", "compare", "review", "split",
           "scan_frames", "monitor", "monitor_settings", "calibrate", "Run", "Predictor", "Predictions", "register",
           "lean_keras", "__version__"]

# Keras's optional integrations, which it imports on start-up when they are installed: pandas
# (DataFrame input to fit), scikit-learn (keras.wrappers) and pyplot (an image-gallery plot).
KERAS_EXTRAS = ("pandas", "sklearn", "matplotlib")
_lean = {"on": False}


def lean_keras() -> None:
    """For the command-line tools: when Keras loads in this process, it loads as if pandas,
    scikit-learn and matplotlib were not installed (modules already imported stay as they
    are). The tools use none of Keras's integrations with them, and importing the three
    is about a third of Keras's start-up: 2.8 s of 8.0 s on a 2-core AVX2 CPU, which
    `inference.py` and `ga monitor` pay on every start. The project's own figures and
    metrics import matplotlib and scikit-learn normally, when they need them. A user's own
    `import ga` keeps Keras whole."""
    _lean["on"] = True


def register() -> None:
    """Import Keras (quietly) and register the project's Keras objects. Idempotent."""
    _quiet_import_keras()
    with _lock:
        import ga.layers  # noqa: F401  (its decorators register the objects)
    _hook.uninstall()


def _quiet_import_keras():
    """Import TensorFlow/Keras without the C++ notes it prints to stderr before its logging
    is configured (oneDNN, missing CUDA), which no environment variable silences."""
    if "keras" in sys.modules:
        return
    if os.environ.get("GA_TF_NOTES") == "1":
        import keras  # noqa: F401

        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        import keras  # noqa: F401

        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # device discovery prints the CUDA note
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _RegisterWhenKerasLoads(importlib.abc.MetaPathFinder):
    """For `import ga` in users' code: registers the project's objects as soon as the
    top-level `keras` module has executed.

    Every lookup of `keras` gets a spec whose loader registers after running Keras's own
    code; a lookup that imports nothing (`importlib.util.find_spec`) leaves the finder in
    place for the real import. The finder removes itself once registration has happened.
    """

    def find_spec(self, name, path=None, target=None):
        if name in _blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (while Keras loads for a ga command)", name=name)
        if name != "keras":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return None  # not an ordinary installation: leave it to the other finders
        original = loader.exec_module

        def exec_then_register(module):
            if _lean["on"]:
                _blocked.update(m for m in KERAS_EXTRAS if m not in sys.modules)
            try:
                original(module)
            finally:
                _blocked.clear()
            register()

        loader.exec_module = exec_then_register  # this loader instance serves this import only
        return spec

    def install(self):
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def uninstall(self):
        if self in sys.meta_path:
            sys.meta_path.remove(self)


_blocked = set()  # KERAS_EXTRAS while Keras's own code runs under lean_keras()
_hook = _RegisterWhenKerasLoads()
if "keras" in sys.modules:
    register()
else:
    _hook.install()
