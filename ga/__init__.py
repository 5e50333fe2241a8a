"""ga: crystal and graphene microscope image classification on Keras 3 / TensorFlow.

``import ga`` registers the project's Keras layers and metrics, so that a saved model
(``.keras`` or ``.h5``) loads with plain ``keras.models.load_model`` in safe mode.
"""

import os

__version__ = "0.1.0"


def _quiet_import():
    """Import TensorFlow/Keras without the C++ start-up notes it prints to stderr before
    its logging is configured (oneDNN, missing CUDA), which no environment variable
    silences. Set GA_TF_NOTES=1 to see them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("GA_TF_NOTES") == "1":
        import keras  # noqa: F401

        return
    import sys

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


_quiet_import()

from ga import layers  # noqa: E402,F401  (registers serializable classes)
