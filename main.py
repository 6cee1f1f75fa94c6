"""hfgd-tf entry point: python main.py --flagfile=experiments/<dataset>/<experiment>.cfg --mode=...

Modes: train (then optionally evaluate, predict and export), eval, predict, export, benchmark and
flops, and pretrain (the backbone only, on built-in shapes). With no arguments at all it runs the
built-in demo (experiments/builtin/demo.cfg): generate the built-in dataset, pretrain a small
backbone and train HFGD from it in about 5 minutes on a CPU, evaluate, write colourised predictions
and export a SavedModel.

The flags are parsed and every value checked before TensorFlow is imported, so a bad flag or
flagfile fails in about a second; the data and weights the mode reads are checked next.
"""

import os
import sys

from absl import app, flags

from hfgd_tf.config import FlagError
from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.flags import check_inputs, define_all_flags, settings_from_flags
from hfgd_tf.quiet_import import import_tensorflow_quietly

ROOT = os.path.dirname(os.path.abspath(__file__))
DEMO_FLAGFILE = os.path.join(ROOT, "experiments", "builtin", "demo.cfg")

define_all_flags()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    settings = settings_from_flags(FLAGS, FLAGS.mode)
  except FlagError as error:
    sys.exit(f"error: {error}")
  import_tensorflow_quietly()
  # pylint: disable=import-outside-toplevel  (they import TensorFlow)
  from hfgd_tf import runs
  from hfgd_tf.data.sources import UnreadableRecordError
  try:
    check_inputs(settings)
    runs.run(settings)
  except (FlagError, UnreadableRecordError) as error:
    sys.exit(f"error: {error}")


def run():
  argv = sys.argv if len(sys.argv) > 1 else sys.argv + [f"--flagfile={DEMO_FLAGFILE}"]
  try:
    argv = expand_flagfiles(argv)
  except ValueError as error:
    sys.exit(f"error: {error}")
  app.run(main, argv=argv)


if __name__ == "__main__":
  run()
