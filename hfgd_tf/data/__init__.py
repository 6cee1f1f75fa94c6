"""The data path: stored examples -> batches of (normalised image, label), as the original fed HFGD.

One example's way, module by module (no import cycles; of the library only `config` and `ops`,
never the model: tests/test_imports.py):
  sources.py     where examples come from: TFRecord shards (file patterns, compression, sharding
                 over input pipelines), as an `ExampleSource`; `tfds_source.py` for a prepared
                 TensorFlow Datasets split;
  decode.py      a stored record (our Model Garden keys or the authors' iDS keys) or encoded image
                 and label-map bytes -> image float32 [H, W, 3] in 0-255, label int32 [H, W];
  augment.py     the HFGD-era training augmentation of one example (scale, photometric,
                 brightness, pad, crop, flip);
  pipeline.py    the datasets the trainer and evaluation read: shuffled, augmented training batches,
                 padded evaluation batches, plain examples; `split_source` picks the source;
  unreadable.py  after a read fails, the shard and record to blame.
Normalisation (x*2/255 - 1) is `hfgd_tf.ops.normalize_image`, shared with predict and export.
"""
