"""Model assembly: backbone -> encoder (CAE) -> decoder (U-SFPN) -> HFGM, from one ModelConfig.

HFGD (paper Fig. 3) has two paths that share the class kernels:
  OS=32 path   backbone -> CAE -> class kernels -> `cae_logits` (trains backbone, CAE, kernels);
  OS=4/2 path  sg(backbone OS=4/8/16, CAE output) -> U-SFPN -> [axial attention] ->
               sg(class kernels) -> `logits` (trains only U-SFPN and the axial attention).
The baselines of the paper's tables are the same builder with switches: no decoder (classify at
OS=32, or at OS=8 with a dilated backbone), a decoder without HFGM (one path, one classifier),
HFGM without axial attention, SFPN or U-SFPN, OS=4 or OS=2.

Training call: model({"image": images, "label": labels}, training=True) returns a dict:
  logits      [N, H, W, K] float32, the main output at input resolution;
  cae_logits  [N, H, W, K] float32, the OS=32 path's logits (HFGM models only);
  aux_logits  [N, H, W, K] float32, OCR's deep supervision (OCR encoder only);
  losses      {name: scalar} the encoder's regularisation losses (CAR), already weighted.
Inference call: model(images, training=False) returns the main logits [N, H, W, K] float32.
Images are normalised to [-1, 1]; labels hold classes 0..K-1 and `ignore_label` elsewhere.
"""

import keras
import tensorflow as tf

from hfgd_tf.config import ModelConfig
from hfgd_tf.modeling.backbones import build_backbone
from hfgd_tf.modeling.decoders import build_decoder
from hfgd_tf.modeling.encoders import build_encoder, encoder_channels
from hfgd_tf.modeling.hfgm import HFGM, protect
from hfgd_tf.ops import resize, spatial_size


@keras.saving.register_keras_serializable("hfgd_tf")
class SegmentationModel(keras.Model):
  """HFGD and every baseline of the paper's tables; see the module docstring for the calls."""

  def __init__(self, config, **kwargs):
    if isinstance(config, dict):
      config = ModelConfig.from_dict(config)
    config.validate()
    kwargs.setdefault("name", "hfgd")
    super().__init__(**kwargs)
    self.config = config
    self.backbone = build_backbone(
        config.backbone, output_stride=config.backbone_output_stride,
        drop_path_rate=config.drop_path_rate, sync_batch_norm=config.sync_batch_norm,
        bn_momentum=config.bn_momentum, name="backbone")
    self.encoder = build_encoder(config, name="encoder")
    self.decoder = build_decoder(
        config, encoder_channels(config, self.backbone.output[32].shape[-1]), name="decoder")
    # The class kernels: the encoder's classifier, reused under stop-gradient by HFGM.
    self.classifier = keras.layers.Conv2D(config.num_classes, 1, name="class_kernels")
    self.hfgm = (HFGM(config.hfgm_axial_attention, config.axial_attention_heads, name="hfgm")
                 if config.hfgm else None)

  def call(self, inputs, training=None):
    if isinstance(inputs, dict):
      images, labels = inputs["image"], inputs.get("label")
    else:
      images, labels = inputs, None
    image_size = spatial_size(images)
    features = self.backbone(images, training=training)
    encoded = self.encoder(features[32], labels=labels, training=training)
    context = encoded["features"]

    outputs = {}
    if self.decoder is None:
      outputs["logits"] = self.classifier(context)
    else:
      pyramid = {stride: features[stride] for stride in (4, 8, 16)}
      top = context
      if self.hfgm is not None:
        outputs["cae_logits"] = self.classifier(context)
        pyramid, top = protect(pyramid), protect(top)
      os2_size = ((image_size[0] + 1) // 2, (image_size[1] + 1) // 2)
      decoded = self.decoder(pyramid, top, output_size=os2_size, training=training)
      if self.hfgm is not None:
        outputs["logits"] = self.hfgm(decoded, classifier=self.classifier)
      else:
        outputs["logits"] = self.classifier(decoded)
    if "aux_logits" in encoded:
      outputs["aux_logits"] = encoded["aux_logits"]

    # Logits leave the model in float32 at the input resolution, whatever the compute dtype.
    outputs = {name: resize(tf.cast(logits, tf.float32), image_size, self.config.align_corners)
               for name, logits in outputs.items()}
    if not training:
      return outputs["logits"]
    outputs["losses"] = encoded["losses"]
    return outputs

  @property
  def original_late_sublayers(self):
    """The original's OCR head has its own main logits conv, created in its build() (after its L2
    was set, so never penalised); every other head's is SegManaged's, created with the model
    (--weight_decay_scope=original, hfgd_tf/optimization.py)."""
    return ("classifier",) if self.config.encoder == "ocr" else ()

  def components(self):
    """The model's parts by paper component, for FLOPs/parameter reports."""
    parts = {"backbone": self.backbone, "encoder": self.encoder, "decoder": self.decoder,
             "hfgm": self.hfgm, "classifier": self.classifier}
    return {name: layer for name, layer in parts.items() if layer is not None}

  def get_config(self):
    config = super().get_config()
    config.update(config=self.config.to_dict())
    return config

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def build_model(config, input_shape=(None, None, 3)):
  """Builds a SegmentationModel and creates its weights with one symbolic-size call."""
  model = SegmentationModel(config)
  height = 65 if input_shape[0] is None else input_shape[0]
  width = 65 if input_shape[1] is None else input_shape[1]
  model(tf.zeros([1, height, width, input_shape[2]]), training=False)
  return model
