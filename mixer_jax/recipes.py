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
"""

import importlib.util
import os

from ml_collections import config_dict

from mixer_jax import errors

placeholder = config_dict.placeholder


def get_config():
  """Returns the default config."""
  config = config_dict.ConfigDict()

  # Model: a variant plus optional MlpMixer field overrides.
  config.model = config_dict.ConfigDict()
  # Mixer variant: 'S/32', 'B/16', 'Mixer-L_16', 'H/14', 'Ti/4', ...
  config.model.variant = 'B/32'
  # Computation dtype ('bfloat16' on accelerators); parameters stay float32.
  config.model.dtype = 'float32'
  # tanh-approximate GELU as the official weights; False: exact erf (timm).
  config.model.approximate_gelu = True
  # Dropout inside the MLP blocks (paper: 0 everywhere).
  config.model.dropout_rate = 0.0
  # Drop-path rate of the last block, linear from 0 over depth.
  config.model.stochastic_depth = 0.0
  # Overrides the variant's number of blocks (None: the variant's).
  config.model.num_blocks = placeholder(int)
  # Overrides the variant's channels per token (None: the variant's).
  config.model.hidden_dim = placeholder(int)
  # Overrides the variant's token-mixing MLP width (None: the variant's).
  config.model.tokens_mlp_dim = placeholder(int)
  # Overrides the variant's channel-mixing MLP width (None: the variant's).
  config.model.channels_mlp_dim = placeholder(int)

  # Pre-trained weights (fine-tuning).
  # A published name ('imagenet21k/Mixer-B_16'), a path or a URL; None: scratch.
  config.pretrained = placeholder(str)
  # Keep the pre-trained head (class counts must match); else a fresh zero head.
  config.keep_head = False
  # Fine-tune at this integer multiple of the pre-training resolution.
  config.resolution_factor = 1
  # Where downloaded checkpoints are cached (None: $MIXER_JAX_CACHE or ~/.cache).
  config.pretrained_cache_dir = placeholder(str)

  # Data.
  # A tfds name, 'digits' (offline, ships with scikit-learn) or a folder
  # DIR/{train,test}/<class>/*.{jpg,png}.
  config.dataset = 'cifar10'
  # tfds data dir (None: $TFDS_DATA_DIR, else ~/tensorflow_datasets).
  config.tfds_data_dir = placeholder(str)
  # tfds manual dir for source archives (None: <data dir>/downloads/manual).
  config.tfds_manual_dir = placeholder(str)
  # Download a missing tfds dataset or published checkpoint (off: never use
  # the network); without network a run fails at once, listing what to put
  # where.
  config.download = True
  # Split to train on (the official recipe keeps 2% of train as minival).
  config.train_split = 'train[:98%]'
  # Split to evaluate on; 'train[98%:]' is the minival for tuning.
  config.eval_split = 'test'
  # Side of the square images the model sees.
  config.image_size = 224
  # Train preprocessing: 'inception_crop', 'resize', 'resmall_crop', 'pad_crop'.
  config.train_pp = 'inception_crop'
  # Eval preprocessing: 'resize', 'resmall_crop' (short side 256/224 of
  # image_size, centre crop) or 'resize_crop' (square resize, centre crop).
  config.eval_pp = 'resize'
  # Random horizontal flips in training.
  config.flip = True
  # Padding (pixels per side) before the random crop of 'pad_crop'.
  config.crop_padding = 4
  # RandAugment: number of ops per image (0: off).
  config.randaugment_layers = 0
  # RandAugment magnitude on TF RandAugment's scale (paper: 10 to 20).
  config.randaugment_magnitude = 10
  # Mixup Beta(a, a) strength (0: off); mixes with the batch rolled by one.
  config.mixup_alpha = 0.0
  # A tfds dataset of the same classes with ReaL labels ('imagenet2012_real')
  # whose validation split is scored in training ('': none).
  config.real_dataset = ''
  # Score it every this many steps and at the end (0: at the end only).
  config.real_every = 1000
  # Every host decodes the whole train split into memory once (small data).
  config.cache = False
  # Batches prefetched onto the devices.
  config.prefetch = 2

  # Optimisation.
  # Random seed: init, data order, augmentation, dropout.
  config.seed = 0
  # Global batch size, over every device and host.
  config.batch_size = 512
  # Global eval batch size (the last batch is padded and masked).
  config.eval_batch_size = 512
  # Micro-batches per step (gradients averaged) for small accelerators; 0:
  # the smallest number whose compiled step fits the devices' memory.
  config.accum_steps = 1
  # Number of training steps (0: only evaluate the starting point).
  config.total_steps = 10_000
  # 'sgd' (momentum, the paper's fine-tuning) or 'adamw' (its pre-training).
  config.optimizer = 'sgd'
  # Peak learning rate.
  config.lr = 0.03
  # SGD momentum.
  config.momentum = 0.9
  # Dtype of the SGD momentum buffer ('bfloat16' halves its memory).
  config.momentum_dtype = 'float32'
  # Adam beta1.
  config.b1 = 0.9
  # Adam beta2.
  config.b2 = 0.999
  # Decoupled weight decay on kernels, scaled by the lr as optax.adamw.
  config.weight_decay = 0.0
  # Clip gradients to this global norm (None: no clipping).
  config.grad_clip_norm = 1.0
  # Linear warmup steps.
  config.warmup_steps = 500
  # Decay after warmup: 'cosine' (to 0) or 'linear' (to linear_end).
  config.decay_type = 'cosine'
  # Learning rate at the end of a linear decay.
  config.linear_end = 1e-5
  # Label smoothing of the softmax cross-entropy.
  config.label_smoothing = 0.0
  # Steps in a row that diverged (loss or gradient not finite: update skipped;
  # or loss above max_loss_factor x ln(num_classes)) that end the run with an
  # error; diverged checkpoints are set aside, the workdir resumes from the
  # last healthy one.
  config.max_diverged_steps = 10
  # A loss above this multiple of ln(num_classes), a fresh zero head's loss,
  # has exploded (0: only non-finite steps diverge).
  config.max_loss_factor = 10.0
  # An eval loss above this multiple of ln(num_classes), or train losses above
  # it for 10 x max_diverged_steps steps in a row, have diverged: the model
  # does worse than a fresh head (0: off).
  config.max_eval_loss_factor = 1.25

  # Evaluation, logging, checkpoints.
  # Evaluate every this many steps (and at the end).
  config.eval_every = 100
  # Log a progress line every this many steps.
  config.progress_every = 10
  # Save a checkpoint every this many steps (and at the end).
  config.checkpoint_every = 1000
  # Checkpoints kept in the workdir (>= 1).
  config.keep_checkpoints = 2
  # Linear few-shot evaluation on frozen pre-logits every this many steps and
  # at the end (0: off), as `python -m mixer_jax.fewshot`.
  config.fewshot_every = 0
  # Its dataset, train split 'train' and test split 'test' (None: the run's
  # dataset, train split and eval split).
  config.fewshot_dataset = placeholder(str)
  # Examples per class.
  config.fewshot_shots = (1, 5, 10, 25)
  # Seeds 0..N-1, the accuracy averaged over them.
  config.fewshot_seeds = 3
  # L2 regularisation of the least-squares fit (big_vision: 2^10).
  config.fewshot_l2 = 1024.0

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
