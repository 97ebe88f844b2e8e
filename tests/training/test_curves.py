"""Tests for mixer_jax.training.curves: the curves of runs, overlaid."""

import os

from PIL import Image
import pytest

from mixer_jax import errors
from mixer_jax.training import curves


def test_curves_read_every_metric_and_the_picture_is_drawn(digits_run,
                                                           tmp_path):
  workdir, _ = digits_run
  found = curves.curves(workdir)
  assert found['train_loss'][0] == [10, 20, 30, 40, 50, 60]
  assert found['eval_accuracy'][0] == [30, 60]
  path = curves.draw([workdir, workdir], str(tmp_path / 'curves.png'))
  with Image.open(path) as image:
    assert image.size == (1000, 700)


def test_a_folder_without_metrics_is_a_clear_error(tmp_path):
  with pytest.raises(errors.UserError, match='has no metrics.jsonl'):
    curves.draw([str(tmp_path)], os.path.join(tmp_path, 'c.png'))
