# Copyright 2026 The mixer_jax Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
r"""`python -m mixer_jax.plan` for several recipes and slices, as one table.

  python experiments/plan_table.py --configs=configs/b16.py,configs/s32.py \
      --topologies=v3-8,v4-8,v5e-8,v6e-8 [--json=FILE]

Each row is what the plan command prints for that recipe on that slice
(compiled here with the real TPU compiler; no TPU is used), beside the
paper's measured TPU-v3 throughput per core (Table 3, 224 px). The img/s
figures are roofline estimates per chip, upper bounds; a v3 chip is two of
the paper's cores.
"""

import json

from absl import app
from absl import flags

from mixer_jax import cli
from mixer_jax import hardware
from mixer_jax import recipes
from mixer_jax.data import sources
from mixer_jax.training import planning

_CONFIGS = flags.DEFINE_list('configs', ['configs/b16.py'], 'Recipe files.')
_TOPOLOGIES = flags.DEFINE_list('topologies', ['v3-8', 'v4-8', 'v5e-8',
                                               'v6e-8'], 'TPU slices.')
_JSON = flags.DEFINE_string('json', None, 'Also write every plan here.')

# Paper Table 3: TPU-v3 img/s per core at 224 px.
PAPER_V3_PER_CORE = {'S/32': 11489, 'S/16': 3994, 'B/32': 4208,
                     'B/16': 1384, 'L/32': 1314, 'L/16': 419, 'H/14': 194}


def main(argv):
  del argv
  cli.compile_only_for_tpu()
  rows = []
  print('| recipe | variant, dtype | batch | slice | fits | HBM GiB/chip '
        '| min accum | est. train img/s/chip | est. infer img/s/chip | paper '
        'v3 img/s/core |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for path in _CONFIGS.value:
    config = recipes.load_file(path)
    num_classes = sources.num_classes(config)
    for topology in _TOPOLOGIES.value:
      tpu_slice = hardware.parse(topology)
      result = planning.plan(config, hardware.devices(tpu_slice),
                         chip=tpu_slice.chip, num_classes=num_classes)
      rows.append({'config': path, 'topology': topology, **result})
      fmt = lambda x, f: '-' if x is None else format(x, f)
      print(f'| `{path}` | {result["variant"]} {result["dtype"]} | '
            f'{result["batch_size"]} | {topology} | '
            f'{"yes" if result["fits"] else "no"} | '
            f'{fmt(result["hbm_gib_per_chip"], ".2f")} | '
            f'{result["min_accum_steps"] or "none"} | '
            f'{fmt(result["est_img_per_s_per_chip"], ",.0f")} | '
            f'{fmt(result["est_infer_img_per_s_per_chip"], ",.0f")} | '
            f'{fmt(PAPER_V3_PER_CORE.get(result["variant"]), ",")} |',
            flush=True)
      if _JSON.value:
        with open(_JSON.value, 'w') as f:
          json.dump(rows, f, indent=2)


if __name__ == '__main__':
  app.run(main)
