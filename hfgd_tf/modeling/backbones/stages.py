"""The four-stage skeleton ConvNeXt(V2) and Swin share: stem (stride 4), then four stages of
blocks with a downsampling step before stages 2-4; each stage's output is an endpoint."""

import keras
import numpy as np


def build_four_stages(stem, downsample, block, depths, drop_path_rate, name=None):
  """Functional model returning {4, 8, 16, 32: features}.

  `stem(images)`, `downsample(x, stage)` (stages 2-4) and `block(x, stage, number, drop_path_rate)`
  (stage and number from 1) make the layers; drop-path rates grow linearly from 0 to
  `drop_path_rate` over all blocks.
  """
  rates = iter(np.linspace(0.0, drop_path_rate, sum(depths)).tolist())
  images = keras.Input((None, None, 3), name="images")
  x = stem(images)
  endpoints = {}
  for stage, depth in enumerate(depths, start=1):
    if stage > 1:
      x = downsample(x, stage)
    for number in range(1, depth + 1):
      x = block(x, stage, number, next(rates))
    endpoints[2 ** (stage + 1)] = x
  return keras.Model(images, endpoints, name=name)
