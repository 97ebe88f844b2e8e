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
"""Every config field, with its default: recipes start here and change a few.

The recipe files live in the repository's configs/ folder and are loaded by
path (`--config=configs/b32.py`, or `load('configs/b32.py')`); this module is
the body they share.

The defaults are the paper's fine-tuning setup as the official code runs it
(momentum SGD, batch 512, clip 1.0, warmup 500 then cosine, 224 px, no weight
decay). Every field is declared here, so a recipe that sets an undeclared one
fails at once instead of silently (the official Mixer config no longer loads
for that reason) and every field can be overridden from the command line.
Each field is stated once, in FIELDS: its name, default, check and what it
is; config_checks applies the checks. Importing this module loads no jax:
the recipe files use it while the command's flags parse.
"""

import dataclasses
import importlib.util
import os
from typing import Any, Callable, Optional

from ml_collections import config_dict

from mixer_jax import errors

# The preprocessing names, each implemented by data/preprocess.py (tested).
TRAIN_PP = ('inception_crop', 'resize', 'resmall_crop', 'pad_crop')
EVAL_PP = ('resize', 'resmall_crop', 'resize_crop')


@dataclasses.dataclass(frozen=True)
class Check:
  """test(value) says whether a value is good; `good` says what one is."""
  test: Callable[[Any], bool]
  good: str


def positive(good: str = '> 0') -> Check:
  return Check(lambda x: x > 0, good)


def positive_or_none(good: str = '> 0') -> Check:
  return Check(lambda x: x is None or x > 0, good)


def non_negative(good: str = '>= 0') -> Check:
  return Check(lambda x: x >= 0, good)


def fraction(good: str = 'in [0, 1)') -> Check:
  """A rate or probability that must leave something."""
  return Check(lambda x: 0 <= x < 1, good)


def one_of(*choices) -> Check:
  return Check(lambda x: x in choices, ' or '.join(map(repr, choices)))


def _float_dtype(name) -> bool:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  try:
    return jnp.issubdtype(jnp.dtype(name), jnp.floating)
  except TypeError:
    return False


def float_dtype(good: str = 'a float dtype name') -> Check:
  return Check(_float_dtype, good)


def _variant(name) -> bool:
  from mixer_jax.model import models  # pylint: disable=g-import-not-at-top
  try:
    models.parse_variant(name)
    return True
  except errors.UserError:
    return False


VARIANT = Check(_variant, "<width>/<patch>, e.g. 'B/16'")


@dataclasses.dataclass(frozen=True)
class Field:
  """A config field: dotted name, default, check (None: any value) and what
  it is; `type` is a None default's type (a placeholder of it)."""
  name: str
  default: Any
  check: Optional[Check]
  help: str
  type: Optional[type] = None


FIELDS = (
    # Model: a variant plus optional MlpMixer field overrides.
    Field('model.variant', 'B/32', VARIANT,
          "Mixer variant: 'S/32', 'B/16', 'Mixer-L_16', 'H/14', 'Ti/4', ..."),
    Field('model.dtype', 'float32',
          float_dtype("a float dtype name, e.g. 'bfloat16'"),
          "Computation dtype ('bfloat16' on accelerators); parameters stay "
          'float32.'),
    Field('model.approximate_gelu', True, None,
          'tanh-approximate GELU as the official weights; False: exact erf '
          '(timm).'),
    Field('model.dropout_rate', 0.0, fraction(),
          'Dropout inside the MLP blocks (paper: 0 everywhere).'),
    Field('model.stochastic_depth', 0.0, fraction(),
          'Drop-path rate of the last block, linear from 0 over depth.'),
    Field('model.num_blocks', None, positive_or_none(),
          "Overrides the variant's number of blocks (None: the variant's).",
          type=int),
    Field('model.hidden_dim', None, positive_or_none(),
          "Overrides the variant's channels per token (None: the "
          "variant's).", type=int),
    Field('model.tokens_mlp_dim', None, positive_or_none(),
          "Overrides the variant's token-mixing MLP width (None: the "
          "variant's).", type=int),
    Field('model.channels_mlp_dim', None, positive_or_none(),
          "Overrides the variant's channel-mixing MLP width (None: the "
          "variant's).", type=int),
    # Pre-trained weights (fine-tuning).
    Field('pretrained', None, None,
          "A published name ('imagenet21k/Mixer-B_16'), a path or a URL; "
          'None: scratch.', type=str),
    Field('keep_head', False, None,
          'Keep the pre-trained head (class counts must match); else a fresh '
          'zero head.'),
    Field('resolution_factor', 1, positive('an integer >= 1'),
          'Fine-tune at this integer multiple of the pre-training '
          'resolution.'),
    Field('pretrained_cache_dir', None, None,
          'Where downloaded checkpoints are cached (None: $MIXER_JAX_CACHE or '
          '~/.cache).', type=str),
    # Data.
    Field('dataset', 'cifar10', None,
          "A tfds name, 'digits' (offline, ships with scikit-learn) or a "
          'folder DIR/{train,test}/<class>/*.{jpg,png}.'),
    Field('tfds_data_dir', None, None,
          'tfds data dir (None: $TFDS_DATA_DIR, else '
          '~/tensorflow_datasets).', type=str),
    Field('tfds_manual_dir', None, None,
          'tfds manual dir for source archives (None: <data '
          'dir>/downloads/manual).', type=str),
    Field('download', True, None,
          'Download a missing tfds dataset or published checkpoint (off: '
          'never use the network); without network a run fails at once, '
          'listing what to put where.'),
    Field('train_split', 'train[:98%]', None,
          'Split to train on (the official recipe keeps 2% of train as '
          'minival).'),
    Field('eval_split', 'test', None,
          "Split to evaluate on; 'train[98%:]' is the minival for tuning."),
    Field('image_size', 224, positive(),
          'Side of the square images the model sees.'),
    Field('train_pp', 'inception_crop', one_of(*TRAIN_PP),
          "Train preprocessing: 'inception_crop', 'resize', 'resmall_crop', "
          "'pad_crop'."),
    Field('eval_pp', 'resize', one_of(*EVAL_PP),
          "Eval preprocessing: 'resize', 'resmall_crop' (short side 256/224 "
          "of image_size, centre crop) or 'resize_crop' (square resize, "
          'centre crop).'),
    Field('flip', True, None,
          'Random horizontal flips in training.'),
    Field('crop_padding', 4, non_negative(),
          "Padding (pixels per side) before the random crop of 'pad_crop'."),
    Field('randaugment_layers', 0, non_negative(),
          'RandAugment: number of ops per image (0: off).'),
    Field('randaugment_magnitude', 10,
          Check(lambda x: 0 <= x <= 30, 'in [0, 30]'),
          "RandAugment magnitude on TF RandAugment's scale (paper: 10 to "
          '20).'),
    Field('mixup_alpha', 0.0, non_negative(),
          'Mixup Beta(a, a) strength (0: off); mixes with the batch rolled by '
          'one.'),
    Field('real_dataset', '', None,
          'A tfds dataset of the same classes with ReaL labels '
          "('imagenet2012_real') whose validation split is scored in training "
          "('': none)."),
    Field('real_every', 1000, non_negative('>= 0 (0: at the end only)'),
          'Score it every this many steps and at the end (0: at the end '
          'only).'),
    Field('cache', False, None,
          'Every host decodes the whole train split into memory once (small '
          'data).'),
    Field('prefetch', 2, non_negative(),
          'Batches prefetched onto the devices.'),
    # Optimisation.
    Field('seed', 0, None,
          'Random seed: init, data order, augmentation, dropout.'),
    Field('batch_size', 512, positive(),
          'Global batch size, over every device and host.'),
    Field('eval_batch_size', 512, positive(),
          'Global eval batch size (the last batch is padded and masked).'),
    Field('accum_steps', 1, non_negative('>= 0 (0: the smallest that fits)'),
          'Micro-batches per step (gradients averaged) for small '
          'accelerators; 0: the smallest number whose compiled step fits the '
          "devices' memory."),
    Field('total_steps', 10_000, non_negative('>= 0 (0: evaluate only)'),
          'Number of training steps (0: only evaluate the starting point).'),
    Field('optimizer', 'sgd', one_of('sgd', 'adamw'),
          "'sgd' (momentum, the paper's fine-tuning) or 'adamw' (its "
          'pre-training).'),
    Field('lr', 0.03, positive(),
          'Peak learning rate.'),
    Field('momentum', 0.9, fraction(),
          'SGD momentum.'),
    Field('momentum_dtype', 'float32', float_dtype(),
          "Dtype of the SGD momentum buffer ('bfloat16' halves its memory)."),
    Field('b1', 0.9, fraction(),
          'Adam beta1.'),
    Field('b2', 0.999, fraction(),
          'Adam beta2.'),
    Field('weight_decay', 0.0, non_negative(),
          'Decoupled weight decay on kernels, scaled by the lr as '
          'optax.adamw.'),
    Field('grad_clip_norm', 1.0, positive_or_none('> 0, or None for none'),
          'Clip gradients to this global norm (None: no clipping).'),
    Field('warmup_steps', 500, non_negative(),
          'Linear warmup steps.'),
    Field('decay_type', 'cosine', one_of('cosine', 'linear'),
          "Decay after warmup: 'cosine' (to 0) or 'linear' (to linear_end)."),
    Field('linear_end', 1e-5, non_negative(),
          'Learning rate at the end of a linear decay.'),
    Field('label_smoothing', 0.0, fraction(),
          'Label smoothing of the softmax cross-entropy.'),
    Field('max_diverged_steps', 10, positive(),
          'Steps in a row that diverged (loss or gradient not finite: update '
          'skipped; or loss above max_loss_factor x ln(num_classes)) that end '
          'the run with an error; diverged checkpoints are set aside, the '
          'workdir resumes from the last healthy one.'),
    Field('max_loss_factor', 10.0, non_negative('>= 0 (0: off)'),
          "A loss above this multiple of ln(num_classes), a fresh zero head's "
          'loss, has exploded (0: only non-finite steps diverge).'),
    Field('max_eval_loss_factor', 1.25, non_negative('>= 0 (0: off)'),
          'An eval loss above this multiple of ln(num_classes), or train '
          'losses above it for 10 x max_diverged_steps steps in a row, have '
          'diverged: the model does worse than a fresh head (0: off).'),
    # Evaluation, logging, checkpoints.
    Field('eval_every', 100, positive(),
          'Evaluate every this many steps (and at the end).'),
    Field('progress_every', 10, positive(),
          'Log a progress line every this many steps.'),
    Field('checkpoint_every', 1000, positive(),
          'Save a checkpoint every this many steps (and at the end).'),
    Field('keep_checkpoints', 2, Check(lambda x: x >= 1, '>= 1'),
          'Checkpoints kept in the workdir (>= 1).'),
    Field('fewshot_every', 0, non_negative('>= 0 (0: off)'),
          'Linear few-shot evaluation on frozen pre-logits every this many '
          'steps and at the end (0: off), as `python -m mixer_jax.fewshot`.'),
    Field('fewshot_dataset', None, None,
          "Its dataset, train split 'train' and test split 'test' (None: the "
          "run's dataset, train split and eval split).", type=str),
    Field('fewshot_shots', (1, 5, 10, 25),
          Check(lambda x: len(x) > 0 and all(k > 0 for k in x),
                'examples per class, each > 0'),
          'Examples per class.'),
    Field('fewshot_seeds', 3, positive(),
          'Seeds 0..N-1, the accuracy averaged over them.'),
    Field('fewshot_l2', 1024.0, positive(),
          'L2 regularisation of the least-squares fit (big_vision: 2^10).'),
)


def get_config():
  """Returns the default config: every field of FIELDS at its default."""
  config = config_dict.ConfigDict()
  for field in FIELDS:
    *parents, last = field.name.split('.')
    node = config
    for parent in parents:
      if parent not in node:
        node[parent] = config_dict.ConfigDict()
      node = node[parent]
    node[last] = (config_dict.placeholder(field.type) if field.type
                  else field.default)
  return config


# Per-dataset presets of the paper's fine-tuning (ViT's setup): steps, splits,
# and the eval split used for the published numbers.
DATASET_PRESETS = {
    'cifar10': dict(total_steps=10_000, train_split='train[:98%]',
                    eval_split='test'),
    'cifar100': dict(total_steps=10_000, train_split='train[:98%]',
                     eval_split='test'),
    'oxford_iiit_pet': dict(total_steps=500, train_split='train[:90%]',
                            eval_split='test'),
    'oxford_flowers102': dict(total_steps=500, train_split='train[:90%]',
                              eval_split='test'),
    'imagenet2012': dict(total_steps=20_000, train_split='train[:99%]',
                         eval_split='validation',
                         real_dataset='imagenet2012_real'),
    # The offline digits (configs/digits.py's length and batch).
    'digits': dict(total_steps=600, warmup_steps=50, train_split='train[:90%]',
                   eval_split='test', batch_size=128, eval_batch_size=128),
}


# The paper's "Avg 5" tasks, and its fine-tuning learning rates.
PAPER_DATASETS = ('imagenet2012', 'cifar10', 'cifar100', 'oxford_iiit_pet',
                  'oxford_flowers102')
PAPER_LR_GRID = (0.003, 0.01, 0.03, 0.06)

def with_dataset(config, dataset: str):
  """Sets `dataset` and its preset fields; unknown names are a clear error."""
  if dataset not in DATASET_PRESETS:
    raise errors.UserError(
        f'Unknown dataset preset {dataset!r}; known: '
        f'{", ".join(DATASET_PRESETS)}.')
  config.dataset = dataset
  config.update(DATASET_PRESETS[dataset])
  return config


def fine_tune(variant: str, pretrained: str, dataset: str = 'cifar10'):
  """The paper's fine-tuning of a published checkpoint on `dataset`."""
  config = with_dataset(get_config(), dataset)
  config.model.variant = variant
  config.pretrained = pretrained
  return config


def digits():
  """The offline default (configs/digits.py): a patch-2 Mixer on the 8x8
  digits that ship with scikit-learn."""
  config = get_config()
  config.dataset = 'digits'
  config.train_split = 'train'
  config.eval_split = 'test'
  config.image_size = 8
  config.model.variant = 'Ti/2'
  config.model.num_blocks = 4
  config.model.hidden_dim = 64
  config.model.tokens_mlp_dim = 32
  config.model.channels_mlp_dim = 256
  config.train_pp = 'pad_crop'
  config.crop_padding = 1
  config.flip = False  # Digits are not mirror-symmetric.
  config.cache = True
  config.batch_size = 128
  config.eval_batch_size = 128
  config.total_steps = 600
  config.optimizer = 'adamw'
  config.lr = 3e-3
  config.weight_decay = 1e-4
  config.warmup_steps = 50
  config.decay_type = 'cosine'
  config.eval_every = 200
  config.progress_every = 50
  config.checkpoint_every = 200
  return config


def apply_overrides(config, values: dict):
  """Sets dotted fields ({'model.dtype': ...}) of `config`; returns it."""
  for dotted, value in values.items():
    *parents, last = dotted.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[last] = value
  return config


def load_file(spec: str):
  """'configs/b16.py[:arg]' -> its get_config([arg]), as --config loads it."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise errors.MissingError(f'No recipe file {path}.')
  module_spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()
