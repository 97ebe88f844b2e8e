"""Tests for experiments/profile_step.py: HLO accounting and the CLI.

No timing is asserted: only that ops are found, labelled and counted right.
"""

import json
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import measure
from experiments import profile_step
from mixer_jax import models

ROOT = pathlib.Path(__file__).parent.parent

FUSED_DOT_HLO = """\
HloModule m

%fused_dot (p0: f32[4,3], p1: f32[5,3]) -> f32[4,5] {
  %p0 = f32[4,3]{1,0} parameter(0)
  %p1 = f32[5,3]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,5]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={1}
}

%fused_gelu (p0.1: f32[4,5]) -> f32[4,5] {
  %p0.1 = f32[4,5]{1,0} parameter(0)
  %tanh.2 = f32[4,5]{1,0} tanh(%p0.1)
  ROOT %multiply.3 = f32[4,5]{1,0} multiply(%p0.1, %tanh.2)
}

ENTRY %main (a: f32[4,3], b: f32[5,3], c: f32[3,4]) -> f32[4,5] {
  %a = f32[4,3]{1,0} parameter(0)
  %b = f32[5,3]{1,0} parameter(1)
  %c = f32[3,4]{1,0} parameter(2)
  %ynn_fusion.7 = f32[4,5]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_dot
  %dot.8 = f32[5,4]{1,0} dot(%b, %c), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %multiply_tanh_fusion.9 = f32[4,5]{1,0} fusion(%ynn_fusion.7), kind=kLoop, calls=%fused_gelu
}
"""


def test_hlo_ops_labels_dots_by_form_and_fusions_by_their_ops():
  ops = profile_step.hlo_ops(FUSED_DOT_HLO)
  assert ops['ynn_fusion.7'] == profile_step.Op(
      'dot NT f32[4,3] x f32[5,3]', 2 * 4 * 5 * 3)
  assert ops['dot.8'] == profile_step.Op(
      'dot NN f32[5,3] x f32[3,4] (Eigen)', 2 * 5 * 4 * 3, untimed=True)
  assert ops['multiply_tanh_fusion.9'] == profile_step.Op(
      'multiply_tanh_fusion (multiply,tanh)')


def entry_flops(hlo_text: str) -> float:
  """Matmul FLOPs of the ops the entry computation runs (fusions included)."""
  entry = re.search(r'^ENTRY %?([\w.\-]+)', hlo_text, re.M)[1]
  ops = profile_step.hlo_ops(hlo_text)
  return sum(ops[name].flops
             for name in profile_step.parse_hlo(hlo_text)[entry])


def test_compiled_programs_hold_the_analytic_matmul_flops():
  model = models.create_model('Ti/4', num_blocks=2, num_classes=10)
  params = models.init_params(model, image_size=16)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ('data',))
  timing = dict(mesh=mesh, image_size=16, batch_size=4)
  forward = models.flops_per_image(model, image_size=16)
  stem = 2 * (16 // 4)**2 * 3 * 4**2 * model.hidden_dim
  jitted, args, _ = measure.inference_program(model, params, **timing)
  assert entry_flops(jitted.lower(*args).compile().as_text()) == 4 * forward
  jitted, args, _ = measure.train_step_program(model, params, num_classes=10,
                                               **timing)
  # Backward: each matmul's two gradients, less the images' (never needed).
  assert (entry_flops(jitted.lower(*args).compile().as_text()) ==
          4 * (3 * forward - stem))


def test_summarize_groups_per_step_and_takes_the_union_as_busy():
  ops = {'ynn_fusion.1': profile_step.Op('dot NN', 4e9),
         'ynn_fusion.2': profile_step.Op('dot NN', 4e9),
         'copy.3': profile_step.Op('copy'),
         'dot.4': profile_step.Op('dot TN (Eigen)', 1e9, untimed=True)}
  second = 10**12  # Trace times are in picoseconds.
  events = [('ynn_fusion.1', 0, second), ('copy.3', second // 2, 2 * second),
            ('ThunkExecutor::Execute', 0, 5 * second),  # Not an HLO op.
            ('ynn_fusion.2', 3 * second, 4 * second),
            ('dot.4', 4 * second, 4 * second + 1000)]
  summary = profile_step.summarize(events, ops, steps=2)
  rows = {row['op']: row for row in summary['rows']}
  assert rows['dot NN']['ms_per_step'] == 1000.0
  assert rows['dot NN']['calls_per_step'] == 1
  assert rows['dot NN']['gflop_per_s'] == 4.0
  assert rows['dot TN (Eigen)']['gflop_per_s'] is None
  # The union of [0, 2], [3, 4] and the launch: 3 s over two steps.
  assert summary['busy_ms_per_step'] == pytest.approx(1500.0, abs=1e-6)
  assert summary['dot_gflop_per_step'] == 4.0
  assert summary['untimed_dot_gflop_per_step'] == 0.5
  assert summary['other_ms_per_step'] == 750.0


def test_cli_traces_the_ops_of_the_train_step(tmp_path):
  out = tmp_path / 'profile.json'
  result = subprocess.run(
      [sys.executable, 'experiments/profile_step.py', '--variant=Ti/4',
       '--num_blocks=1', '--image_size=16', '--batch=8', '--num_classes=10',
       '--steps=2', '--warmup=1', f'--trace_dir={tmp_path / "trace"}',
       f'--json={out}'], cwd=ROOT, capture_output=True, text=True,
      timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'ms/step' in result.stdout
  profile = json.loads(out.read_text())
  model = models.create_model('Ti/4', num_blocks=1, num_classes=10)
  stem = 2 * (16 // 4)**2 * 3 * 4**2 * model.hidden_dim
  expected = 8 * (3 * models.flops_per_image(model, image_size=16) - stem)
  traced = profile['dot_gflop_per_step'] + profile['untimed_dot_gflop_per_step']
  assert np.isclose(traced * 1e9, expected)
  assert profile['busy_ms_per_step'] > 0
  assert any(row['op'].startswith('dot') for row in profile['rows'])
