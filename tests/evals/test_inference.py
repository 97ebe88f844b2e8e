"""mixer_jax.evals.inference: reading images of every kind a user has."""

import numpy as np
from PIL import Image
import pytest

from mixer_jax.evals import inference

RAMP = np.linspace(0, 1, 64 * 64).reshape(64, 64)


@pytest.mark.parametrize('mode, values, suffix', [
    ('L', (RAMP * 255).astype(np.uint8), 'png'),
    ('I;16', (RAMP * 65535).astype(np.uint16), 'png'),  # A 16-bit grey PNG.
    ('I', (RAMP * 65535).astype(np.int32), 'tiff'),
    ('F', RAMP.astype(np.float32), 'tiff'),
    ('RGB', np.stack([(RAMP * 255).astype(np.uint8)] * 3, -1), 'png'),
    ('RGBA', np.concatenate([np.stack([(RAMP * 255).astype(np.uint8)] * 3, -1),
                             np.full((64, 64, 1), 255, np.uint8)], -1), 'png'),
])
def test_every_mode_keeps_its_full_range(tmp_path, mode, values, suffix):
  path = tmp_path / f'ramp.{suffix}'
  Image.fromarray(values).save(path)
  with Image.open(path) as image:
    assert image.mode == mode
  rgb = inference.read_image(str(path))
  assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
  np.testing.assert_allclose(rgb[..., 0], RAMP * 255, atol=1)


def test_a_file_that_is_not_an_image_is_one_user_error(tmp_path):
  (tmp_path / 'x.png').write_bytes(b'not a png')
  with pytest.raises(inference.errors.UserError, match='not an image'):
    inference.read_image(str(tmp_path / 'x.png'))


def test_image_files_names_a_folder_without_images(tmp_path):
  (tmp_path / 'empty' / 'sub').mkdir(parents=True)
  (tmp_path / 'empty' / 'notes.txt').write_text('')
  with pytest.raises(inference.errors.MissingError,
                     match='empty: a folder with no image in it'):
    inference.image_files([str(tmp_path / 'empty')])
  (tmp_path / 'empty' / 'sub' / 'a.PNG').write_bytes(b'')
  assert inference.image_files([str(tmp_path / 'empty')]) == [
      str(tmp_path / 'empty' / 'sub' / 'a.PNG')]
