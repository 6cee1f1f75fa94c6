"""Nested flagfiles resolved relative to the file that includes them, command line last.

absl resolves `--flagfile=` paths against the working directory, so a chain of experiment files
only works from one directory. `expand_flagfiles` inlines every `--flagfile=PATH` of argv before
absl sees it: top-level paths relative to the working directory, nested ones relative to the
including file. Within the files, later lines override earlier ones, as in absl; flags written on
the command line come after every file's, so they win whatever their order
(`--mode=flops --flagfile=X` runs flops even though X says --mode=train).

A flagfile may be a URL of any filesystem TensorFlow knows (`gs://bucket/x.cfg`): it is read through
tf.io.gfile and the files it includes resolve against its URL. Local files are read without
TensorFlow, so main.py still checks its flags before importing it.

The first flagfile on the command line names the experiment: `--experiment_name=<its stem>` is put
before everything else, so the run folder defaults to runs/<stem> and a file or the command line can
still set it.
"""

import os
import posixpath

from hfgd_tf import atomic_files
from hfgd_tf.quiet_import import import_tensorflow_quietly

_PREFIXES = ("--flagfile=", "-flagfile=")


def _flagfile_path(argument):
  for prefix in _PREFIXES:
    if argument.startswith(prefix):
      return argument[len(prefix):]
  return None


def _is_url(path):
  return "://" in path


def _absolute(path):
  """`path` made absolute: a URL with its `..` and `.` parts resolved, a local path by the working
  directory (os.path.abspath would turn `gs://b/x` into `<cwd>/gs:/b/x`)."""
  if not _is_url(path):
    return os.path.abspath(path)
  scheme, separator, rest = path.partition("://")
  return scheme + separator + posixpath.normpath(rest)


def _one_line(message):
  """`message` with its line breaks and runs of spaces made single spaces (TensorFlow's messages
  of an unreachable bucket span two lines)."""
  return " ".join(message.split())


def _read_url(path, where):
  """The text of flagfile URL `path`, through tf.io.gfile."""
  tf = import_tensorflow_quietly()
  try:
    exists = atomic_files.isfile(path)
  except tf.errors.OpError as error:  # an unknown scheme, an unreachable bucket
    raise ValueError(f"flagfile {path}{where}: {_one_line(error.message)}") from error
  if not exists:
    raise ValueError(f"flagfile {path} does not exist{where}")
  return atomic_files.read_bytes(path).decode("utf-8")


def _lines(path, chain):
  """The text lines of flagfile `path`; a ValueError naming it when it is missing or unreadable."""
  where = f" (included from {chain[-1]})" if chain else ""
  try:
    if _is_url(path):
      return _read_url(path, where).splitlines()
    if not os.path.isfile(path):
      raise ValueError(f"flagfile {path} does not exist{where}")
    with open(path, encoding="utf-8") as file:
      return file.read().splitlines()
  except (OSError, UnicodeDecodeError) as error:
    raise ValueError(f"flagfile {path}{where}: {_one_line(str(error))}") from error


def _included(nested, including):
  """The path `--flagfile=nested` names in flagfile `including`: a URL as it is, anything else
  relative to the including file's folder (posix joins under a URL)."""
  nested = os.path.expanduser(nested)
  if _is_url(nested):
    return nested
  if _is_url(including):
    return posixpath.join(atomic_files.parent(including), nested)
  return os.path.join(os.path.dirname(including), nested)


def _read_flagfile(path, chain):
  path = _absolute(path)
  if path in chain:
    raise ValueError(f"flagfile {path} includes itself (via {' -> '.join(chain)})")
  expanded = []
  for line in _lines(path, chain):
    line = line.strip()
    if not line or line.startswith("#") or line.startswith("//"):
      continue
    nested = _flagfile_path(line)
    if nested is None:
      expanded.append(line)
    else:
      expanded.extend(_read_flagfile(_included(nested, path), chain + [path]))
  return expanded


def experiment_name(path):
  """The experiment a flagfile describes: its file name without the extension."""
  return os.path.splitext(os.path.basename(path))[0]


def expand_flagfiles(argv):
  """argv[0], --experiment_name of the first flagfile, every flagfile's flags (recursively, in
  order), then the command line's own flags."""
  from_files, from_command_line, experiment = [], [], []
  for argument in argv[1:]:
    path = _flagfile_path(argument)
    if path is None:
      from_command_line.append(argument)
    else:
      if not experiment:
        experiment = [f"--experiment_name={experiment_name(path)}"]
      from_files.extend(_read_flagfile(os.path.expanduser(path), []))
  return argv[:1] + experiment + from_files + from_command_line
