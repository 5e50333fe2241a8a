"""ga: crystal and graphene microscope image classification on Keras 3 / TensorFlow.

``import ga`` registers the project's Keras layers and metrics, so that a saved model
(``.keras`` or ``.h5``) loads with plain ``keras.models.load_model`` in safe mode.
"""

import os

# TensorFlow's C++ start-up chatter (oneDNN and missing-CUDA notes, printed before its
# logging is configured) is not for users; level 3 is the one that silences it. Python-side
# errors still raise with their messages. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

from ga import layers  # noqa: E402,F401  (registers serializable classes)
