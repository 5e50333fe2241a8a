"""ga: crystal and graphene microscope image classification on Keras 3 / TensorFlow.

``import ga`` makes the project's Keras layers and metrics known to Keras, so that a saved
model (``.keras`` or ``.h5``) loads with plain ``keras.models.load_model`` in safe mode.
Keras itself is imported only when something uses it: the split and the synthetic data
generators start without TensorFlow. If Keras is already imported the registration happens
at once, otherwise right after Keras's own import finishes.
"""

import importlib.abc
import os
import sys

__version__ = "0.1.0"

# TensorFlow's C++ start-up notes are not for users (GA_TF_NOTES=1 shows them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _quiet_import_keras():
    """Import TensorFlow/Keras without the C++ notes it prints to stderr before its logging
    is configured (oneDNN, missing CUDA), which no environment variable silences."""
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


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Runs `import ga.layers` as soon as the top-level `keras` module has been imported."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_then_register(module):
            original(module)
            import ga.layers  # noqa: F401

        loader.exec_module = exec_then_register
        return spec


def register():
    """Register the project's Keras objects now (imports Keras)."""
    _quiet_import_keras()
    import ga.layers  # noqa: F401


if "keras" in sys.modules:
    import ga.layers  # noqa: F401,E402
else:
    sys.meta_path.insert(0, _RegisterAfterKeras())
