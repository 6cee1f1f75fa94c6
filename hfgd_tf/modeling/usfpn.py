"""SemanticFPN and U-SFPN (paper Sec. 3.3): the upsampling decoder.

SemanticFPN (Kirillov et al. 2019, as iSeg builds it): lateral conv-BN-ReLU on the OS=4, 8, 16
features, a top-down pathway summing each level with the upsampled coarser one (the OS=32 top is
used as is when it already has `filters` channels), then one semantic branch per level of
max(1, i) "3x3 conv-BN-ReLU + 2x bilinear upsample" blocks (i = 0 for OS=4 ... 3 for OS=32) so all
branches meet at OS=4, summed, then a 1x1 conv-BN-ReLU (end conv).

U-SFPN changes three things: 3x3 instead of 1x1 laterals, 256 instead of 128 filters (the paper
uses 256 for its SFPN baselines as well, appendix A.1), and for OS=2 one more conv-upsample block
per branch (the OS=4 branch becomes conv at OS=4, then conv + upsample), without OS=2 backbone
features. All resizes are bilinear with aligned corners.
"""

import keras
import tensorflow as tf

from hfgd_tf.modeling.layers.common import ConvNormAct
from hfgd_tf.ops import resize, spatial_size

PYRAMID_STRIDES = (4, 8, 16, 32)


@keras.saving.register_keras_serializable("hfgd_tf")
class SemanticFPN(keras.layers.Layer):
  """call(pyramid, top, output_size=None, training=None) -> [N, h, w, filters].

  pyramid: {4: [N, H/4, W/4, C4], 8: ..., 16: ...}; top: the OS=32 features (the encoder's);
  output_size: (h, w) of the OS=2 output (ceil(H/2), ceil(W/2)); unused at OS=4.
  `top_lateral` adds a lateral conv on the top too (when it does not have `filters` channels).
  """

  # iSeg's FeaturePyramidNetwork and SemanticPyramidNetworkBlock_V2 create every conv in build(),
  # after its L2 was set: never penalised (--weight_decay_scope=original, hfgd_tf/optimization.py).
  original_late_sublayers = ("laterals", "branches", "end_conv")

  def __init__(self, filters=256, lateral_kernel_size=1, output_stride=4, top_lateral=False,
               align_corners=True, norm=None, **kwargs):
    super().__init__(**kwargs)
    if output_stride not in (2, 4):
      raise ValueError(f"SemanticFPN output_stride must be 2 or 4, not {output_stride}")
    self.filters = filters
    self.lateral_kernel_size = lateral_kernel_size
    self.output_stride = output_stride
    self.top_lateral = top_lateral
    self.align_corners = align_corners
    self.norm = dict(norm or {})

    def conv(kernel_size, name):
      return ConvNormAct(filters, kernel_size, name=name, dtype=self.dtype_policy, **self.norm)

    # Sub-layers are tracked in dicts keyed "os<stride>": SavedModel needs string keys.
    lateral_strides = PYRAMID_STRIDES if top_lateral else PYRAMID_STRIDES[:-1]
    self.laterals = {f"os{stride}": conv(lateral_kernel_size, f"lateral{stride}")
                     for stride in lateral_strides}
    # Branch of level i: one block per step down to OS=4 (at least one), plus one to OS=2.
    self.branches = {}
    for level, stride in enumerate(PYRAMID_STRIDES):
      num_blocks = max(1, level) + (1 if output_stride == 2 else 0)
      self.branches[f"os{stride}"] = [conv(3, f"branch{stride}_conv{block}")
                                      for block in range(num_blocks)]
    self.end_conv = conv(1, "end_conv")

  def _branch_targets(self, level):
    """Strides each block of a branch upsamples to (None: no upsample)."""
    targets = list(reversed(PYRAMID_STRIDES[:level])) or [None]
    if self.output_stride == 2:
      targets.append(2)
    return targets

  def call(self, pyramid, top, output_size=None, training=None):
    if self.output_stride == 2 and output_size is None:
      raise ValueError("SemanticFPN at output_stride=2 needs output_size")
    # Top-down pathway, coarse to fine.
    levels = {32: self.laterals["os32"](top, training=training) if self.top_lateral else top}
    x = levels[32]
    for stride in (16, 8, 4):
      lateral = self.laterals[f"os{stride}"](pyramid[stride], training=training)
      x = resize(x, spatial_size(lateral), self.align_corners) + lateral
      levels[stride] = x
    sizes = {stride: spatial_size(levels[stride]) for stride in PYRAMID_STRIDES}
    sizes[2] = output_size

    outputs = []
    for level, stride in enumerate(PYRAMID_STRIDES):
      x = levels[stride]
      for block, target in zip(self.branches[f"os{stride}"], self._branch_targets(level)):
        x = block(x, training=training)
        if target is not None:
          x = resize(x, sizes[target], self.align_corners)
      outputs.append(x)
    return self.end_conv(tf.add_n(outputs), training=training)

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, lateral_kernel_size=self.lateral_kernel_size,
                  output_stride=self.output_stride, top_lateral=self.top_lateral,
                  align_corners=self.align_corners, norm=self.norm)
    return config
