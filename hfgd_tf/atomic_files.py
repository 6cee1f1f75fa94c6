"""Writing a file so that a reader sees the old one or the finished new one, never half of it.

No TensorFlow here: converter workers and flag checks use it too.
"""

import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path, temp_suffix=None):
  """Yields a temporary path beside `path`, renamed onto `path` when the block ends.

  `temp_suffix` names it `path + temp_suffix` (e.g. the shard writer's ".incomplete", which readers
  skip); by default it is a unique name. On any error the temporary file is removed and `path` is
  left as it was.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  if temp_suffix is None:
    fd, temp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
  else:
    temp = path + temp_suffix
  try:
    yield temp
    os.replace(temp, path)
  except BaseException:
    if os.path.exists(temp):
      os.remove(temp)
    raise


@contextlib.contextmanager
def atomic_write(path, mode="w"):
  """open() of `path` for writing, through `atomic_path`."""
  with atomic_path(path) as temp, open(temp, mode) as f:
    yield f


def write_json(path, payload, indent=2):
  """`payload` as JSON at `path`, atomically."""
  with atomic_write(path) as f:
    json.dump(payload, f, indent=indent)
