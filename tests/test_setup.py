"""What `pip install` asks for: TensorFlow only through an extra, so that an
installed TensorFlow distribution (Colab's `tensorflow`) is kept, not joined
by `tensorflow-cpu`."""

import importlib.metadata

from packaging import requirements

TENSORFLOWS = {'tensorflow', 'tensorflow-cpu'}


def _requirements():
  return [requirements.Requirement(r)
          for r in importlib.metadata.requires('mixer_jax')]


def test_tensorflow_comes_only_with_an_extra():
  for extras, wanted in [((), set()), (('tf',), {'tensorflow-cpu'}),
                         (('test',), {'tensorflow-cpu'})]:
    asked = set()
    for extra in extras or ('',):
      asked |= {r.name for r in _requirements() if r.name in TENSORFLOWS and
                (r.marker is None or r.marker.evaluate(
                    {'extra': extra, 'platform_machine': 'x86_64'}))}
    assert asked == wanted, extras


def test_tensorflow_datasets_is_a_plain_requirement():
  assert any(r.name == 'tensorflow-datasets' and r.marker is None
             for r in _requirements())
