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
"""Installs mixer_jax: `pip install -e '.[test]'`, or `.[tf]` without tests."""

import setuptools

TENSORFLOW = ['tensorflow-cpu; platform_machine=="x86_64"',
              'tensorflow; platform_machine!="x86_64"']

setuptools.setup(
    name='mixer_jax',
    version='0.1.0',
    description='MLP-Mixer in JAX/Flax: the paper\'s models, checkpoints, '
    'fine-tuning and training.',
    license='Apache 2.0',
    # Recipe files (configs/) load by path and import mixer_jax.recipes; no
    # top-level `configs` package is installed.
    packages=setuptools.find_packages(include=['mixer_jax', 'mixer_jax.*']),
    # ImageNet-1k and -21k class names (synset, lemmas) in head order.
    package_data={'mixer_jax': ['data/*.tsv.gz']},
    python_requires='>=3.10',
    install_requires=[
        'absl-py',
        'etils[epath]',
        'flax',
        'importlib_resources',  # tfds 4.9 needs it on Python 3.11.
        'jax',
        'matplotlib',
        'ml_collections',
        'numpy',
        'optax',
        'orbax-checkpoint',
        'pillow',
        'scikit-learn',  # Ships the offline `digits` dataset.
        'tensorboard',
        # TensorFlow (tf.data, tfds) comes from the `tf` extra, as tfds itself
        # leaves it to the user: a machine that has `tensorflow` (Colab, a GPU
        # box) keeps it instead of getting `tensorflow-cpu` beside it.
        'tensorflow-datasets',
        'tqdm',
    ],
    extras_require={
        # TensorFlow for the input pipeline, where none is installed yet.
        'tf': TENSORFLOW,
        # nbconvert and ipykernel execute the notebooks; libtpu (jax[tpu])
        # compiles for TPUs in tests/test_plan.py, where it installs;
        # jax2onnx and onnxruntime export and run ONNX in tests/test_export.py,
        # safetensors writes timm's weights there.
        'test': TENSORFLOW + [
            'ipykernel', 'nbconvert', 'pytest', 'pytest-xdist', 'jax2onnx',
            'onnxruntime', 'safetensors',
            'jax[tpu]; sys_platform=="linux" and platform_machine=="x86_64"'],
        # --format=onnx of mixer_jax.export.
        'onnx': ['jax2onnx'],
        # --format=timm of mixer_jax.export.
        'timm': ['safetensors'],
        'gpu': ['jax[cuda12]'],
        'tpu': ['jax[tpu]'],
    },
)
