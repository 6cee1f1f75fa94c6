"""The original codebase's (iSeg's) published backbone weight files; no TensorFlow, so flags can
check `--backbone_weights=iseg[:<file>]` against `--backbone` in a second (downloads:
`pretrained.py`)."""

import dataclasses

from hfgd_tf import atomic_files
from hfgd_tf.config import FlagError

# Release downloads of github.com/edwardyehuang/iSeg (links in its backbones/README.md).
RELEASE_BASE = "https://github.com/edwardyehuang/iSeg/releases/download"


@dataclasses.dataclass(frozen=True)
class ReleaseFile:
  file: str
  tag: str  # the GitHub release

  @property
  def url(self):
    return f"{RELEASE_BASE}/{self.tag}/{self.file}"


# Backbone -> its published files (what each was pretrained on: docs/backbones.md); the first is
# what `iseg` loads. The R50/R101 runs of the paper's era went through CAR's flagfiles, which name
# resnet{50,101}_bn.h5 (common_weights_path.cfg); the iSeg README links resnet{50,101}.h5 of the
# same release: both load, `_bn` is the default.
RELEASES = {
    "resnet50": (ReleaseFile("resnet50_bn.h5", "0.0.2"), ReleaseFile("resnet50.h5", "0.0.2")),
    "resnet101": (ReleaseFile("resnet101_bn.h5", "0.0.2"), ReleaseFile("resnet101.h5", "0.0.2")),
    "swin_large_384": (ReleaseFile("swin_large_384.h5", "0.0.5"),),
    "convnext_large": (ReleaseFile("convnext_large.h5", "0.0.5"),),
    "convnext_v2_large": (ReleaseFile("convnext_v2_large.h5", "0.0.5"),),
}


def release_file(spec, backbone):
  """The ReleaseFile `iseg` or `iseg:<file>` names for `backbone`; FlagError when there is none."""
  files = RELEASES.get(backbone)
  if not files:
    raise FlagError(f"--backbone_weights={spec}: no published file of the original codebase is "
                    f"known for backbone {backbone!r}, only for {', '.join(sorted(RELEASES))}; "
                    "pass a file or --backbone_weights=none")
  name = spec.partition(":")[2]
  if not name:
    return files[0]
  for release in files:
    if release.file == name:
      return release
  raise FlagError(f"--backbone_weights={spec}: {backbone!r} has the published files "
                  f"{', '.join(r.file for r in files)}, not {name!r}")


def check_spec(spec, backbone):
  """FlagError for a --backbone_weights value that cannot work with `backbone` (no network)."""
  if spec is None or spec == "none":
    return
  if is_iseg_spec(spec):
    release_file(spec, backbone)
  elif not atomic_files.isfile(spec):  # any TF filesystem (gs://...)
    raise FlagError(f"--backbone_weights: {spec} does not exist")


def is_iseg_spec(spec):
  return spec == "iseg" or spec.startswith("iseg:")
