"""--backbone_weights=iseg: downloads from a local HTTP server on 127.0.0.1 (cache hit, interrupted
download, wrong file, no server), the run's record, the random-weights warning, and the paper
flagfiles naming the original's files."""

import dataclasses
import hashlib
import http.server
import json
import os
import threading

import numpy as np
import pytest
import tensorflow as tf

from datasets.builtin import ensure_builtin_dataset
from hfgd_tf.config import FlagError, TrainConfig
from hfgd_tf.modeling.backbones import build_backbone, iseg_release, pretrained
from hfgd_tf.training import Trainer
from tests import tiny_runs
from tests.test_flags import FLAGFILES, ROOT, _settings

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "iseg", "resnet_fixture.h5")
# The fixture has the configuration of tests/tiny_backbones.py's resnet_test.
RELEASE = iseg_release.ReleaseFile("resnet_fixture.h5", "0.0.2")


class _Server:
  """Serves /0.0.2/resnet_fixture.h5 as `mode` says: 'ok', 'cut' (announces the whole file, sends
  half, closes) or 'html' (a page instead of the file); counts the requests."""

  def __init__(self):
    with open(FIXTURE, "rb") as f:
      self.content = f.read()
    self.mode, self.requests = "ok", 0
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):  # noqa: N802 (the http.server name)
        server.requests += 1
        body = server.content if server.mode != "html" else b"<html>Not Found</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if server.mode != "cut" else body[:len(body) // 2])
        self.close_connection = True

      def log_message(self, *args):
        del args

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self.thread.start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture(name="server")
def _server_fixture(monkeypatch):
  server = _Server()
  monkeypatch.setattr(iseg_release, "RELEASE_BASE", server.url)
  monkeypatch.setitem(iseg_release.RELEASES, "resnet_test", (RELEASE,))
  yield server
  server.close()


def _train(**kwargs):
  return dataclasses.replace(TrainConfig(), **kwargs)


def test_download_once_then_cache_hit_and_record(server, tmp_path):
  cache = "ram://weights_cache"  # any tf.io.gfile file system (gs:// in real runs)
  train = _train(backbone_weights="iseg", weights_cache_dir=cache)
  backbone = build_backbone("resnet_test")
  report = pretrained.load_pretrained(backbone, "resnet_test", train, record_dir=str(tmp_path))
  assert len(report.loaded) == len(backbone.weights) and server.requests == 1
  cached = f"{cache}/models/resnet_fixture.h5"
  assert tf.io.gfile.listdir(f"{cache}/models") == ["resnet_fixture.h5"]
  with tf.io.gfile.GFile(cached, "rb") as f:
    assert f.read() == server.content
  with open(tmp_path / pretrained.RECORD_NAME) as f:
    record = json.load(f)
  assert record == {"backbone_weights": "iseg", "file": cached,
                    "url": f"{server.url}/0.0.2/resnet_fixture.h5",
                    "sha256": hashlib.sha256(server.content).hexdigest()}
  again = build_backbone("resnet_test")
  pretrained.load_pretrained(again, "resnet_test", train)
  assert server.requests == 1  # served from the cache
  for a, b in zip(backbone.weights, again.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("mode, reason", [("cut", "IncompleteRead|ended after"),
                                          ("html", "not an iSeg backbone weights file")])
def test_bad_download_leaves_no_file_and_says_how(server, tmp_path, mode, reason):
  server.mode = mode
  with pytest.raises(FlagError, match=reason) as error:
    pretrained.resolve("iseg", "resnet_test", str(tmp_path))
  message = str(error.value)
  assert "\n" not in message and f"{server.url}/0.0.2/resnet_fixture.h5" in message
  assert os.listdir(tmp_path / "models") == []  # neither the target nor a partial file
  server.mode = "ok"
  path, _ = pretrained.resolve("iseg", "resnet_test", str(tmp_path))
  assert os.listdir(tmp_path / "models") == ["resnet_fixture.h5"] and os.path.getsize(path) == len(
      server.content)


def test_offline_is_one_line_with_the_link_and_the_manual_command(monkeypatch, tmp_path):
  monkeypatch.setattr(iseg_release, "RELEASE_BASE", "http://127.0.0.1:1")  # nothing listens
  with pytest.raises(FlagError) as error:
    pretrained.resolve("iseg", "resnet50", str(tmp_path))
  target = tmp_path / "models" / "resnet50_bn.h5"
  url = "http://127.0.0.1:1/0.0.2/resnet50_bn.h5"
  assert str(error.value).startswith(f"--backbone_weights=iseg: cannot download {url} (")
  assert str(error.value).endswith(f"download it by hand: curl -L --create-dirs -o {target} {url}")
  assert "\n" not in str(error.value) and not target.exists()


def test_cache_dir_follows_keras_get_file(monkeypatch):
  monkeypatch.setenv("KERAS_HOME", "/somewhere/keras")
  assert pretrained.cache_dir() == "/somewhere/keras/models"
  assert pretrained.cache_dir("gs://bucket/cache") == "gs://bucket/cache/models"
  monkeypatch.delenv("KERAS_HOME")
  assert pretrained.cache_dir() == os.path.join(os.path.expanduser("~"), ".keras", "models")


def test_random_weights_of_a_published_backbone_warn_once(server, caplog):
  del server
  for spec in ("none", None):
    caplog.clear()
    assert pretrained.load_pretrained(None, "resnet_test", _train(backbone_weights=spec)) is None
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "random weights" in warnings[0].getMessage()
  caplog.clear()
  pretrained.load_pretrained(None, "swin_test", _train(backbone_weights="none"))
  assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("spec, message", [
    ("iseg", "--backbone_weights=iseg: no published file of the original codebase is known for "
             "backbone 'resnet_tiny', only for convnext_large, convnext_v2_large, resnet101"),
    ("iseg:resnet101.h5", "'resnet50' has the published files resnet50_bn.h5, resnet50.h5, not "
                          "'resnet101.h5'"),
])
def test_flags_reject_a_file_the_backbone_has_not(spec, message):
  backbone = "resnet_tiny" if spec == "iseg" else "resnet50"
  with pytest.raises(FlagError, match=message.replace("(", r"\(")):
    _settings(f"--backbone={backbone}", f"--backbone_weights={spec}", mode="flops")


def test_every_paper_flagfile_names_the_original_file_of_its_backbone():
  named = {}
  for path in FLAGFILES:
    with open(path) as f:
      if "--backbone=" not in f.read():
        continue  # a dataset or recipe base, not an experiment
    settings = _settings(f"--flagfile={path}", mode="flops")
    backbone = settings.model.backbone
    if backbone in iseg_release.RELEASES:
      named[os.path.relpath(path, ROOT)] = settings.train.backbone_weights
      assert settings.train.backbone_weights == (
          f"iseg:{iseg_release.RELEASES[backbone][0].file}"), path
  assert len(named) >= 30  # every experiment but the built-in demo
  recipe = f"{ROOT}/experiments/pascal_context/hfgd-os4_r50_bs16-30k_pascal-context-59-513.cfg"
  none = _settings(f"--flagfile={recipe}", "--backbone_weights=none", mode="flops")
  assert none.train.backbone_weights == "none"


@pytest.mark.slow  # ~60 s on 2 shared cores: two trainers build their input pipelines and models
def test_trainer_starts_from_the_download_records_it_and_a_resume_does_not(server, tmp_path):
  data_dir = ensure_builtin_dataset(str(tmp_path / "data"), num_train=2, num_val=1)
  train = tiny_runs.tiny_train_config(data_dir, tmp_path / "checkpoints",
                                      backbone_weights="iseg",
                                      weights_cache_dir=str(tmp_path / "cache"))
  trainer = Trainer(tiny_runs.tiny_model(), train, tf.distribute.get_strategy())
  expected = build_backbone("resnet_test")
  pretrained.load_pretrained(expected, "resnet_test", train)
  for variable, want in zip(trainer.model.backbone.weights, expected.weights):
    np.testing.assert_array_equal(variable.numpy(), want.numpy(), err_msg=variable.path)
  with open(tmp_path / "checkpoints" / pretrained.RECORD_NAME) as f:
    assert json.load(f)["sha256"] == hashlib.sha256(server.content).hexdigest()
  # A resumed run restores its checkpoint and fetches nothing (it may run offline).
  trainer.save()
  server.close()
  resumed = dataclasses.replace(train, weights_cache_dir=str(tmp_path / "empty_cache"))
  Trainer(tiny_runs.tiny_model(), resumed, tf.distribute.get_strategy())
  assert server.requests == 1 and not (tmp_path / "empty_cache").exists()
