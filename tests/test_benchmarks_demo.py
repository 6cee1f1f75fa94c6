"""The demo's benchmark: HFGD vs SFPN (table, learning-curve picture, the --quick chain); the
backbone pretraining it starts from is tested in test_pretrain.py."""

import io
import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
from PIL import Image

from benchmarks import hfgd_vs_sfpn
from datasets import builtin
from hfgd_tf import atomic_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_NAMES = list(builtin.CLASS_NAMES)


def _result(model, seed, final, class_iou):
  return hfgd_vs_sfpn.RunResult(model, seed, [10, 20], [final / 2, final], class_iou, 1.0)


def test_table_gives_mean_and_std_over_seeds_and_thin_classes_apart():
  solid, thin = [1.0, 0.8, 0.8, 0.8, 0.2, 0.2, 0.2], [1.0, 0.6, 0.6, 0.6, 0.4, 0.4, 0.4]
  results = [_result("sfpn", 0, 0.5, solid), _result("sfpn", 1, 0.7, thin),
             _result("hfgd_os4", 0, 0.9, thin)]
  table = hfgd_vs_sfpn.summary_table(results, CLASS_NAMES, builtin.THIN_CLASSES).splitlines()
  assert table[0].split()[:5] == ["model", "seeds", "mIoU", "solid", "thin"]
  sfpn = table[1].split()
  # mIoU 0.5 and 0.7; solid classes 0.8 and 0.6; thin 0.2 and 0.4.
  assert sfpn[:11] == ["sfpn", "2", "0.600", "+-", "0.100", "0.700", "+-", "0.100", "0.300",
                       "+-", "0.100"]
  assert table[2].split()[:3] == ["hfgd_os4", "1", "0.900"]


def test_learning_curves_draw_one_line_per_model_where_its_miou_is():
  results = [hfgd_vs_sfpn.RunResult("sfpn", 0, [50, 100], [0.1, 0.1], [0.0] * 7, 1.0),
             hfgd_vs_sfpn.RunResult("hfgd_os4", 0, [50, 100], [0.5, 0.9], [0.0] * 7, 1.0)]
  image = hfgd_vs_sfpn.learning_curve_image(results, width=400, height=300, margin=40)
  assert image.shape == (300, 400, 3) and image.dtype == np.uint8

  def rows_with(colour, column):
    return np.flatnonzero((image[:, column] == colour).all(-1))

  # At the last step (right edge of the plot) the HFGD line sits at 0.9, the SFPN line at 0.1.
  top, bottom, right = 20, 260, 380
  hfgd_rows = rows_with(hfgd_vs_sfpn.COLOURS["hfgd_os4"], right - 2)
  sfpn_rows = rows_with(hfgd_vs_sfpn.COLOURS["sfpn"], right - 2)
  assert abs(hfgd_rows.mean() - (bottom - 0.9 * (bottom - top))) < 3
  assert abs(sfpn_rows.mean() - (bottom - 0.1 * (bottom - top))) < 3


def test_results_and_curves_go_to_a_bucket(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  output_dir = f"ram://{uuid.uuid4().hex}/out"
  results = [_result("sfpn", 0, 0.5, [0.5] * 7), _result("hfgd_os4", 0, 0.9, [0.9] * 7)]
  curve_path = hfgd_vs_sfpn.write_results(output_dir, results, steps=20, seeds=1)
  assert curve_path == f"{output_dir}/learning_curves.png"
  saved = atomic_files.read_json(f"{output_dir}/results.json")
  assert saved["steps"] == 20 and [run["miou"] for run in saved["runs"]] == [[0.25, 0.5],
                                                                            [0.45, 0.9]]
  with Image.open(io.BytesIO(atomic_files.read_bytes(curve_path))) as picture:
    assert picture.size == (640, 400)
  assert not list(tmp_path.iterdir())  # nothing in a local folder named "ram:"


@pytest.mark.slow
def test_quick_comparison_writes_table_results_and_curves(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.hfgd_vs_sfpn", "--quick",
       f"--output_dir={tmp_path}/out", f"--data_dir={tmp_path}/data"],
      capture_output=True, text=True, env=env, timeout=600, check=False, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  table = result.stdout.split("over seeds):\n", 1)[1].splitlines()
  rows = {line.split()[0]: line for line in table if "+-" in line}
  assert set(rows) == {"sfpn", "hfgd_os4", "hfgd_os2"}
  saved = json.loads((tmp_path / "out" / "results.json").read_text())
  assert len(saved["runs"]) == 6 and all(run["steps"] == [2, 4] for run in saved["runs"])
  with Image.open(tmp_path / "out" / "learning_curves.png") as picture:
    assert picture.size == (640, 400)
