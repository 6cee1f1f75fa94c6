"""The install files, one per machine kind: each installs exactly one TensorFlow wheel, and the
versions they share cannot drift apart (CPU and GPU: the same TensorFlow; the TPU file and CI's
second environment: the same 2.20; every file the same Keras, numpy, h5py, pillow and absl)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TENSORFLOW = re.compile(r"^(tensorflow(?:-cpu|-tpu)?)(\[[a-z-]+\])?==(\S+)$")


def _lines(name):
  """The requirement lines of `name`, with those of the files it includes (-r)."""
  lines = []
  with open(os.path.join(ROOT, name), encoding="utf-8") as file:
    for line in file:
      line = line.split("#")[0].strip()
      if line.startswith("-r "):
        lines += _lines(line[3:].strip())
      elif line:
        lines.append(line)
  return lines


def _tensorflow(name):
  """{(distribution, extra): version} of the TensorFlow wheels `name` installs."""
  return {match.group(1, 2): match.group(3) for match in map(TENSORFLOW.match, _lines(name))
          if match}


def test_each_machine_kind_installs_one_tensorflow_wheel_at_matching_versions():
  cpu, gpu = _tensorflow("requirements.txt"), _tensorflow("requirements-gpu.txt")
  assert list(cpu) == [("tensorflow", None)]
  # The GPU file adds the CUDA extra to the same pin (one wheel, pip merges the two lines).
  assert gpu == {**cpu, ("tensorflow", "[and-cuda]"): cpu[("tensorflow", None)]}
  tpu, ci = _tensorflow("requirements-tpu.txt"), _tensorflow("requirements-tf220.txt")
  assert tpu == {("tensorflow-tpu", None): "2.20.0"}  # never beside tensorflow
  assert ci == {("tensorflow-cpu", None): "2.20.0"}  # CI tests the TPU file's TensorFlow
  assert any(re.fullmatch(r"libtpu==0\.0\.\d+", line) for line in _lines("requirements-tpu.txt"))


def test_the_rest_is_pinned_once_for_every_machine_kind():
  base = set(_lines("requirements-base.txt"))
  assert {line.split("==")[0] for line in base} >= {"keras", "absl-py", "h5py", "pillow"}
  for name in ("requirements.txt", "requirements-gpu.txt", "requirements-tpu.txt",
               "requirements-tf220.txt"):
    assert base <= set(_lines(name)), name
  pytest_pins = [line for line in _lines("requirements-dev.txt") if line.startswith("pytest==")]
  assert pytest_pins and set(pytest_pins) <= set(_lines("requirements-tf220.txt"))
