"""Nested flagfiles resolved relative to the file that includes them.

absl resolves `--flagfile=` paths against the working directory, so a chain of experiment files
only works from one directory. `expand_flagfiles` inlines every `--flagfile=PATH` of argv before
absl sees it: top-level paths relative to the working directory, nested ones relative to the
including file. Later lines override earlier ones, as in absl.
"""

import os

_PREFIXES = ("--flagfile=", "-flagfile=")


def _flagfile_path(argument):
  for prefix in _PREFIXES:
    if argument.startswith(prefix):
      return argument[len(prefix):]
  return None


def _read_flagfile(path, chain):
  path = os.path.abspath(path)
  if path in chain:
    raise ValueError(f"flagfile {path} includes itself (via {' -> '.join(chain)})")
  if not os.path.isfile(path):
    where = f" (included from {chain[-1]})" if chain else ""
    raise ValueError(f"flagfile {path} does not exist{where}")
  expanded = []
  with open(path, encoding="utf-8") as file:
    for line in file:
      line = line.strip()
      if not line or line.startswith("#") or line.startswith("//"):
        continue
      nested = _flagfile_path(line)
      if nested is None:
        expanded.append(line)
      else:
        nested = os.path.join(os.path.dirname(path), os.path.expanduser(nested))
        expanded.extend(_read_flagfile(nested, chain + [path]))
  return expanded


def expand_flagfiles(argv):
  """argv with each --flagfile=PATH replaced by the flags it (recursively) contains."""
  expanded = []
  for argument in argv:
    path = _flagfile_path(argument)
    if path is None:
      expanded.append(argument)
    else:
      expanded.extend(_read_flagfile(os.path.expanduser(path), []))
  return expanded
