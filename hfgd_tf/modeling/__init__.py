"""The paper's model, assembled by model.py from one ModelConfig; each component in its own file.

  backbones/       the backbones, registered by their --backbone value, and their weight files;
  encoders.py      the context encoders by their --encoder value: cae.py (CAE, with car.py's
                   class-aware regularization) and Table 1's alternatives aspp.py, ocr.py and
                   self_attention_encoder.py;
  decoders.py      the decoders by their --decoder value: usfpn.py (SemanticFPN, U-SFPN);
  hfgm.py          the high-level feature guided module;
  layers/          layers shared by the components (conv-BN-activation, axial and full
                   self-attention);
  losses.py        cross-entropy with the ignore label and the weighted total of the model's losses.
"""
