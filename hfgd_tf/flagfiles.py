"""Nested flagfiles resolved relative to the file that includes them, command line last.

absl resolves `--flagfile=` paths against the working directory, so a chain of experiment files
only works from one directory. `expand_flagfiles` inlines every `--flagfile=PATH` of argv before
absl sees it: top-level paths relative to the working directory, nested ones relative to the
including file. Within the files, later lines override earlier ones, as in absl; flags written on
the command line come after every file's, so they win whatever their order
(`--mode=flops --flagfile=X` runs flops even though X says --mode=train).

The first flagfile on the command line names the experiment: `--experiment_name=<its stem>` is put
before everything else, so the run folder defaults to runs/<stem> and a file or the command line can
still set it.
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
