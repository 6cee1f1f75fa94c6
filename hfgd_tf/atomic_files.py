"""Files on any filesystem TensorFlow knows (a local folder, gs://, s3://, ram://, ...): reading,
writing so that a reader sees the old file or the finished new one, never half of it, and the path
helpers every reader and writer of the project shares.

Every user path goes through tf.io.gfile. TensorFlow is imported on the first file touched, not on
import, so modules that only name paths (the dataset registry, the flag definitions) stay light.

A file is written beside its destination and renamed onto it. Where the filesystem cannot rename
(tf.errors.UnimplementedError) the finished temporary file is copied onto the destination instead
(object stores such as gs:// show an object only once its upload is complete) and then removed. A
folder (a SavedModel) is renamed into place on a local disk; elsewhere renaming a folder is not one
step (gs:// renames object by object, ram:// loses the contents), so its files are copied in with
the file that marks it complete last.
"""

import contextlib
import json
import os
import uuid

from hfgd_tf.quiet_import import import_tensorflow_quietly


def gfile():
  """tf.io.gfile, importing TensorFlow on first use."""
  return import_tensorflow_quietly().io.gfile


def is_local(path):
  """Whether `path` names the local disk (no URL scheme, or file://)."""
  return "://" not in path or path.startswith("file://")


def parent(path):
  """The folder holding `path`, kept a URL for URLs (os.path.abspath would turn `gs://b/x` into
  the local `<cwd>/gs:/b/x`); '' for a bare local file name."""
  scheme, separator, rest = path.rpartition("://")
  return scheme + separator + os.path.dirname(rest.rstrip("/"))


def makedirs(path):
  """Creates folder `path` and its parents where missing ('' is the working directory)."""
  if path:
    gfile().makedirs(path)


def isfile(path):
  """Whether `path` exists and is not a folder."""
  return gfile().exists(path) and not gfile().isdir(path)


def listdir(path):
  """The names in folder `path`, sorted, without the trailing '/' object stores give folders."""
  return sorted(name.rstrip("/") for name in gfile().listdir(path))


def read_bytes(path):
  """The bytes of file `path`; an OSError naming it when it is missing or unreadable."""
  tf = import_tensorflow_quietly()
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read()
  except tf.errors.OpError as error:
    raise OSError(f"cannot read {path}: {error.message or type(error).__name__}") from error


def read_json(path):
  """The JSON content of file `path` (OSError, UnicodeDecodeError or json.JSONDecodeError)."""
  return json.loads(read_bytes(path).decode("utf-8"))


def temp_sibling(path):
  """A fresh hidden name beside `path` (`.<name>.<random>.tmp`) to write it before it is moved
  into place. It does not start with `path`: ram:// takes `path` for a folder while a longer name
  starting with it exists."""
  name = os.path.basename(path.rstrip("/"))
  return os.path.join(parent(path), f".{name}.{uuid.uuid4().hex[:12]}.tmp")


def _move(temp, path):
  """Puts the finished file `temp` at `path`: a rename, or a copy where renaming is unsupported."""
  tf = import_tensorflow_quietly()
  try:
    tf.io.gfile.rename(temp, path, overwrite=True)
  except tf.errors.UnimplementedError:
    tf.io.gfile.copy(temp, path, overwrite=True)
    tf.io.gfile.remove(temp)


@contextlib.contextmanager
def atomic_path(path, temp_suffix=None):
  """Yields a temporary path beside `path`, moved onto `path` when the block ends.

  `temp_suffix` names it `path + temp_suffix` (e.g. the shard writer's ".incomplete", which readers
  skip); by default it is a unique name. On any error the temporary file is removed and `path` is
  left as it was.
  """
  makedirs(parent(path))
  temp = path + temp_suffix if temp_suffix is not None else temp_sibling(path)
  try:
    yield temp
    _move(temp, path)
  except BaseException:
    if gfile().exists(temp):
      gfile().remove(temp)
    raise


@contextlib.contextmanager
def atomic_write(path, mode="w"):
  """A writable file object (mode "w" or "wb") whose content appears at `path` when the block
  ends, through `atomic_path`."""
  with atomic_path(path) as temp, gfile().GFile(temp, mode) as f:
    yield f


def write_bytes(path, data):
  """`data` as the content of `path`, atomically."""
  with atomic_write(path, "wb") as f:
    f.write(data)


def write_json(path, payload, indent=2):
  """`payload` as JSON at `path`, atomically."""
  with atomic_write(path) as f:
    f.write(json.dumps(payload, indent=indent))


def publish_dir(temp_dir, final_dir, last_file):
  """Moves the complete folder `temp_dir` to `final_dir`, replacing an old one.

  Local disk: the old folder is renamed aside, the new one renamed in, the old one deleted, so
  `final_dir` is always the old complete folder, absent, or the new one. Elsewhere: the old folder's
  `last_file` goes first, then the rest of it, and the new files are copied in with `last_file`
  last, so a folder that holds `last_file` is complete (an interruption leaves one without it).
  """
  files = gfile()
  if is_local(final_dir):
    if not files.exists(final_dir):
      files.rename(temp_dir, final_dir)
      return
    old_dir = temp_sibling(final_dir)
    files.rename(final_dir, old_dir)
    try:
      files.rename(temp_dir, final_dir)
    except BaseException:
      files.rename(old_dir, final_dir)
      raise
    files.rmtree(old_dir)
    return
  if files.exists(final_dir):
    if files.exists(os.path.join(final_dir, last_file)):
      files.remove(os.path.join(final_dir, last_file))
    files.rmtree(final_dir)
  names = []
  for folder, _, names_here in files.walk(temp_dir):
    relative = folder[len(temp_dir):].lstrip("/")  # walk yields folders under temp_dir
    files.makedirs(os.path.join(final_dir, relative))
    names.extend(os.path.join(relative, name) for name in names_here)
  for name in sorted(names, key=lambda name: name == last_file):
    files.copy(os.path.join(temp_dir, name), os.path.join(final_dir, name))
  files.rmtree(temp_dir)
