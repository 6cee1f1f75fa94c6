"""What `--backbone_weights` names, made into a loaded backbone: a file, or the original codebase's
(iSeg's) published ImageNet weights, downloaded once into a cache.

  --backbone_weights=<file>        a weights file of any format `weights.py` reads (local or gs://);
  --backbone_weights=iseg          the file the paper's runs started from for the configured
                                   backbone (`RELEASES`, first entry), from iSeg's GitHub release;
  --backbone_weights=iseg:<file>   another published file of the backbone (e.g. resnet50.h5);
  --backbone_weights=none          random weights, on purpose (tests, CI, from-scratch studies).
Training a backbone the original publishes weights for from random ones logs one warning line.

The cache follows `keras.utils.get_file`: `<cache dir>/models/<file>`, the cache dir being
--weights_cache_dir or $KERAS_HOME or ~/.keras, so a file fetched by get_file is found; any
tf.io.gfile path works (one shared gs:// folder serves every host of a multi-host job). A download
goes to a uniquely named hidden temporary file beside its target (hfgd_tf/atomic_files.py), is
checked (complete, an HDF5 file with the original's layer names), and only then renamed onto the
target, so the target is either absent or complete; hosts downloading at the same time each rename
a complete copy. The SHA-256 of the file loaded is written to
`<checkpoint dir>/backbone_weights.json` with its source.
"""

import hashlib
import http.client
import os
import urllib.error
import urllib.request

import tensorflow as tf
from absl import logging

from hfgd_tf import atomic_files
from hfgd_tf.config import FlagError
from hfgd_tf.modeling.backbones import iseg_h5
from hfgd_tf.modeling.backbones.iseg_release import RELEASES, is_iseg_spec, release_file
from hfgd_tf.modeling.backbones.weights import load_backbone_weights

RECORD_NAME = "backbone_weights.json"
_CHUNK = 1 << 22


def cache_dir(weights_cache_dir=None):
  """The folder `keras.utils.get_file` would use: <--weights_cache_dir or KERAS_HOME>/models."""
  root = weights_cache_dir or os.environ.get("KERAS_HOME") or os.path.join(
      os.path.expanduser("~"), ".keras")
  return os.path.join(root, "models")


def _is_iseg_h5(path):
  try:
    with iseg_h5.open_h5(path) as f:
      return iseg_h5.is_iseg_file(f)
  except OSError:  # not an HDF5 file
    return False


def download(url, path, timeout=60):
  """Downloads `url` to `path` (gfile) through a temporary file; the target is never partial."""
  with atomic_files.atomic_path(path) as partial:
    with urllib.request.urlopen(url, timeout=timeout) as response:
      expected = response.headers.get("Content-Length")
      size = 0
      with tf.io.gfile.GFile(partial, "wb") as out:
        for chunk in iter(lambda: response.read(_CHUNK), b""):
          out.write(chunk)
          size += len(chunk)
    if expected is not None and size != int(expected):
      raise OSError(f"download ended after {size} of {expected} bytes")
    if not _is_iseg_h5(partial):
      raise OSError("the server sent something that is not an iSeg backbone weights file "
                    f"({size} bytes)")


def resolve(spec, backbone, weights_cache_dir=None):
  """(path, url or None) of the file `spec` names for `backbone`, downloading `iseg` files once;
  (None, None) for random weights. A failed download is one FlagError line with the manual fix."""
  if spec is None or spec == "none":
    return None, None
  if not is_iseg_spec(spec):
    return spec, None
  release = release_file(spec, backbone)
  path = os.path.join(cache_dir(weights_cache_dir), release.file)
  if tf.io.gfile.exists(path):
    logging.info("Backbone weights %s: cached at %s", release.url, path)
    return path, release.url
  logging.info("Downloading %s to %s", release.url, path)
  try:
    download(release.url, path)
  except (OSError, http.client.HTTPException, urllib.error.URLError) as error:
    manual = (f"curl -L --create-dirs -o {path} {release.url}" if "://" not in path else
              f"curl -L -o {release.file} {release.url} and copy it to {path}")
    reason = " ".join(str(getattr(error, "reason", error)).split())
    raise FlagError(f"--backbone_weights={spec}: cannot download {release.url} ({reason}); "
                    f"download it by hand: {manual}") from error
  return path, release.url


def sha256(path):
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def write_record(directory, spec, path, url):
  """Writes <directory>/backbone_weights.json: what was loaded, from where, its SHA-256."""
  record = {"backbone_weights": spec, "file": path, "url": url, "sha256": sha256(path)}
  atomic_files.write_json(os.path.join(directory, RECORD_NAME), record, indent=1)
  return record


def load_pretrained(backbone, backbone_name, train, record_dir=None):
  """Loads what `train.backbone_weights` names into `backbone` (see the module docstring) and
  records it in `record_dir` (the chief's checkpoint folder; None: no record). The LoadReport, or
  None for random weights."""
  spec = train.backbone_weights
  path, url = resolve(spec, backbone_name, train.weights_cache_dir)
  if path is None:
    if backbone_name in RELEASES:
      logging.warning("%s starts from random weights (--backbone_weights=%s): every number of "
                      "the paper starts from the original's ImageNet weights "
                      "(--backbone_weights=iseg); from scratch expect a far lower mIoU.",
                      backbone_name, spec)
    return None
  report = load_backbone_weights(backbone, path, allow_partial=train.allow_partial_weights)
  if record_dir:
    record = write_record(record_dir, spec, path, url)
    logging.info("Backbone weights %s: sha256 %s", path, record["sha256"])
  return report
