"""Import TensorFlow without its C++ start-up chatter on stderr.

TF's native runtime prints CUDA/oneDNN lines before Python logging is configured and no environment
variable hides all of them, so fd 2 points at /dev/null only while `import tensorflow` and the
device discovery run.
"""

import os
import sys


def import_tensorflow_quietly():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if "tensorflow" in sys.modules:
    return sys.modules["tensorflow"]
  sys.stderr.flush()
  saved_fd = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    import tensorflow  # pylint: disable=import-outside-toplevel
    import keras  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    # Device discovery prints driver lines (e.g. "failed call to cuInit" on CPU-only machines).
    tensorflow.config.list_physical_devices()
  finally:
    os.dup2(saved_fd, 2)
    os.close(saved_fd)
    os.close(devnull)
  return tensorflow
