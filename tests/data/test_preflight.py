"""Tests for mixer_jax.data.preflight: what a run cannot fetch, listed at once."""

import os

import pytest

from mixer_jax import errors
from mixer_jax import recipes
from mixer_jax import trainer
from mixer_jax.data import preflight
from mixer_jax.trainer import setup
from tests.conftest import ROOT


@pytest.fixture(name='offline')
def fixture_offline(monkeypatch):
  """No host answers (a test never uses the network)."""
  tried = []
  monkeypatch.setattr(preflight, 'reachable',
                      lambda url: tried.append(url) or False)
  return tried


def test_the_mission_command_offline_lists_everything_missing(
    offline, tmp_path, monkeypatch):
  monkeypatch.setenv('MIXER_JAX_CACHE', str(tmp_path / 'cache'))
  config = recipes.load_file(str(ROOT / 'configs' / 'b32.py'))
  config.tfds_data_dir = str(tmp_path / 'data')
  workdir = str(tmp_path / 'run')
  with pytest.raises(errors.MissingError) as error:
    trainer.train_and_evaluate(config, workdir)
  cache = (tmp_path / 'cache' / 'storage.googleapis.com' / 'mixer_models' /
           'gsam' / 'Mixer-B_32.npz')
  assert str(error.value) == (
      "Missing, and not to be fetched: (1) tfds dataset 'cifar10' "
      '(www.cs.toronto.edu unreachable): put cifar-10-binary.tar.gz in '
      f"{tmp_path / 'data' / 'downloads' / 'manual'}; (2) checkpoint "
      'https://storage.googleapis.com/mixer_models/gsam/Mixer-B_32.npz '
      f'(storage.googleapis.com unreachable): put it at {cache}. Or point '
      '--config.tfds_data_dir at a prepared dataset; --config.download=False '
      'never uses the network.')
  assert len(offline) == 2 and not os.path.exists(workdir)


def test_download_off_asks_no_host(offline, tmp_path, monkeypatch):
  monkeypatch.setenv('MIXER_JAX_CACHE', str(tmp_path / 'cache'))
  config = recipes.load_file(str(ROOT / 'configs' / 'b32.py'))
  config.update(dict(download=False, tfds_data_dir=str(tmp_path / 'data')))
  with pytest.raises(errors.MissingError, match=r'\(1\) .*download is off.*'
                     r'\(2\) checkpoint .*download is off'):
    setup.check_available(config)
  assert not offline


def test_what_is_here_needs_no_network(offline, tmp_path, monkeypatch):
  monkeypatch.setenv('MIXER_JAX_CACHE', str(tmp_path / 'cache'))
  config = recipes.load_file(str(ROOT / 'configs' / 'b32.py'))
  config.dataset = 'digits'
  config.pretrained = str(tmp_path / 'local.npz')  # Checked when loaded.
  setup.check_available(config)
  assert not offline


def test_reachable_is_false_for_a_closed_port():
  assert not preflight.reachable('http://127.0.0.1:9/', timeout=1)
