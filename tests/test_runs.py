"""What runs.run writes where several workers run the same command: the chief alone writes the
run's shared files (eval_results.json, predictions, the SavedModel); every worker still evaluates
its share and returns the results."""

import os

from absl import flags

from hfgd_tf import distribution, runs, training
from hfgd_tf.flags import checked_settings_from_flags, define_all_flags

TINY = ["--dataset=builtin", "--backbone=resnet_test", "--encoder_filters=16",
        "--cae_car_filters=16", "--decoder_filters=16", "--builtin_num_train=4",
        "--builtin_num_val=2", "--crop_height=33", "--crop_width=33", "--eval_height=129",
        "--eval_width=129", "--batch_size=2", "--eval_batch_size=2", "--shuffle_buffer=4",
        "--train_steps=1", "--mixed_precision=none", "--backbone_weights=none"]


def _settings(tmp_path, *arguments, mode="train"):
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(["main.py", *TINY, f"--data_dir={tmp_path / 'data'}",
               f"--model_dir={tmp_path / 'run'}", *arguments])
  return checked_settings_from_flags(flag_values, mode)


def test_a_worker_other_than_the_chief_writes_no_results_predictions_or_export(tmp_path,
                                                                              monkeypatch):
  """(The chief's writes are what every other test of these modes checks.)"""
  # What runs.py asks; the trainer keeps its own (imported above) answer and its checkpoint folder,
  # which this test is not about.
  monkeypatch.setattr(distribution, "is_chief", lambda strategy: False)
  monkeypatch.setattr(training, "worker_dir", lambda strategy, directory: directory)
  settings = _settings(tmp_path, "--predict_after_train", "--export_after_train")
  assert runs.run(settings)["step"] == 1
  written = {name: os.path.exists(path) for name, path in (
      ("eval", os.path.join(settings.train.model_dir, "eval_results.json")),
      ("predictions", settings.predict_output_dir),
      ("export", os.path.join(settings.export_dir, "1", "saved_model.pb")))}
  assert written == dict.fromkeys(written, False)
  results = runs.run(_settings(tmp_path, "--mode=eval", mode="eval"))  # from the checkpoint
  assert 0 <= results.mean_iou <= 1
  assert not os.path.exists(os.path.join(settings.train.model_dir, "eval_results.json"))
