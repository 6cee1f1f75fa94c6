"""hfgd-tf entry point: python main.py --flagfile=experiments/<dataset>/<experiment>.cfg --mode=...

Modes: flops (FLOPs and parameters per component).
"""

import sys

from hfgd_tf.quiet_import import import_tensorflow_quietly

import_tensorflow_quietly()

# pylint: disable=wrong-import-position
from absl import app, flags, logging

from hfgd_tf.flagfiles import expand_flagfiles
from hfgd_tf.flags import define_model_flags, model_config_from_flags

define_model_flags()
flags.DEFINE_enum("mode", "flops", ["flops"], "What to run.")
flags.DEFINE_integer("flops_height", 513, "Input height of the FLOPs count.")
flags.DEFINE_integer("flops_width", 513, "Input width of the FLOPs count.")
flags.DEFINE_list("flops_backbones", [], "Count these backbones alone (with a 1000-way classifier, "
                  "at flops_height, against their published figures) instead of the model.")
FLAGS = flags.FLAGS


def run_flops():
  # pylint: disable=import-outside-toplevel
  from hfgd_tf.flops import format_backbone_complexity, format_complexity, model_complexity
  from hfgd_tf.model import build_model
  if FLAGS.flops_backbones:
    logging.info("\n%s", format_backbone_complexity(FLAGS.flops_backbones, FLAGS.flops_height))
    return
  config = model_config_from_flags()
  model = build_model(config)
  report = model_complexity(model, FLAGS.flops_height, FLAGS.flops_width)
  decoder = (config.decoder if config.decoder == "none"
             else f"{config.decoder} OS={config.decoder_output_stride}")
  title = (f"{config.backbone} (OS={config.backbone_output_stride}) / {config.encoder} / {decoder}"
           f" / HFGM={config.hfgm}: {FLAGS.flops_height}x{FLAGS.flops_width}x3, K={config.num_classes}")
  logging.info("\n%s", format_complexity(report, title))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  {"flops": run_flops}[FLAGS.mode]()


def run():
  try:
    argv = expand_flagfiles(sys.argv)
  except ValueError as error:
    sys.exit(f"error: {error}")
  app.run(main, argv=argv)


if __name__ == "__main__":
  run()
