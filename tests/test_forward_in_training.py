"""Tests for experiments/forward_in_training.py: op matching and the CLI.

No timing is asserted: only that the two programs' forward ops are matched.
"""

import json
import pathlib
import subprocess
import sys

import pytest

from experiments import forward_in_training

ROOT = pathlib.Path(__file__).parent.parent


@pytest.mark.parametrize('op_name, key', [
    ('jit(train_step)/jvp(MlpMixer)/MixerBlock_3/channel_mixing/Dense_0/'
     'dot_general', 'MlpMixer/MixerBlock_*/channel_mixing/Dense_0/dot_general'),
    ('jit(<lambda>)/MlpMixer/MixerBlock_11/LayerNorm_0/reduce_sum',
     'MlpMixer/MixerBlock_*/LayerNorm_0/reduce_sum'),
    ('jit(train_step)/jvp(MlpMixer)/stem/transpose', 'MlpMixer/stem/transpose'),
    # The backward, the loss and the optimizer are not the forward's.
    ('jit(train_step)/transpose(jvp(MlpMixer))/MixerBlock_0/channel_mixing/'
     'Dense_1/dot_general', None),
    ('jit(train_step)/add', None),
    ('', None),
])
def test_forward_key(op_name, key):
  assert forward_in_training.forward_key(op_name) == key


def test_op_names_reads_the_metadata():
  hlo = ('ENTRY %main (a: f32[4,3], b: f32[3,5]) -> f32[4,5] {\n'
         '  %a = f32[4,3]{1,0} parameter(0)\n'
         '  %b = f32[3,5]{1,0} parameter(1)\n'
         '  ROOT %ynn_fusion.7 = f32[4,5]{1,0} fusion(%a, %b), kind=kCustom, '
         'metadata={op_name="jit(f)/MlpMixer/head/dot_general" '
         'stack_frame_id=3}\n}\n')
  assert forward_in_training.op_names(hlo) == {
      'ynn_fusion.7': 'jit(f)/MlpMixer/head/dot_general'}


def test_cli_matches_every_forward_matmul(tmp_path):
  out = tmp_path / 'forward.json'
  result = subprocess.run(
      [sys.executable, 'experiments/forward_in_training.py', '--variant=Ti/4',
       '--num_blocks=1', '--image_size=16', '--batch=8', '--num_classes=10',
       '--rounds=2', '--steps=1', f'--json={out}'], cwd=ROOT,
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'traced train step' in result.stdout
  comparison = json.loads(out.read_text())
  dots = [row for row in comparison['forward']
          if row['label'].startswith('dot')]
  # The stem, two per mixing MLP and the head, in both programs.
  assert {row['op'].split('/')[-2] for row in dots} >= {
      'stem', 'Dense_0', 'Dense_1', 'head'}
  for row in dots:
    if row['op'].split('/')[-2] != 'head':  # Eigen's in training: a launch.
      assert row['train_ms'] > 0 and row['inference_ms'] > 0, row
  assert comparison['train_matmul_ms'] > 0
  assert comparison['train_other_ms'] >= 0
  assert comparison['train_idle_ms'] >= 0
  assert (comparison['train_matmul_ms'] + comparison['train_other_ms'] +
          comparison['train_idle_ms'] == pytest.approx(
              comparison['train_traced_step_ms']))


def test_cli_names_an_unknown_variant():
  result = subprocess.run(
      [sys.executable, 'experiments/forward_in_training.py', '--variant=Q/7'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode != 0
  assert "Unknown Mixer variant 'Q/7'" in result.stderr
  assert 'Traceback' not in result.stderr
