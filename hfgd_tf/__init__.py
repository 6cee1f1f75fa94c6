"""hfgd-tf: HFGD (High-level Feature Guided Decoder) for semantic segmentation, TF/Keras 3."""

__version__ = "0.1.0"
