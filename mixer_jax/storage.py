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
"""Every path a user gives, local or in a bucket, through one layer:
etils.epath (as orbax, tfds and big_vision use it).

A local path keeps what local disks allow: appends, and whole files written
beside their final name and renamed into place. A URL (gs://, s3://) is an
object store, which has no appends and no renames: every object is written
whole, once per write, and an object written is there in full or not at all.
gs:// goes through gcsfs (or TensorFlow's client where EPATH_USE_TF is not
'false' and TensorFlow is installed), with the application-default
credentials; orbax writes checkpoints through tensorstore.
"""

import functools
import os
import re
from typing import Optional, Union

from etils import epath

from mixer_jax import errors

PathLike = Union[str, os.PathLike]
_URL = re.compile(r'([A-Za-z][\w+.-]*)://')
# How long a bucket may stay silent before a command gives up on it.
BUCKET_TIMEOUT_S = 30


def is_url(path: PathLike) -> bool:
  """Whether `path` is an object store's URL (gs://bucket/...), not a path
  of this host's filesystems."""
  return bool(_URL.match(os.fspath(path)))


def path(p: PathLike) -> epath.Path:
  return epath.Path(p)


def join(base: PathLike, *parts: str) -> str:
  """base/parts as a string, for a URL as for a local path."""
  return os.fspath(epath.Path(base).joinpath(*parts))


def exists(p: PathLike) -> bool:
  return epath.Path(p).exists()


def read_text(p: PathLike) -> str:
  return epath.Path(p).read_text()


def read_bytes(p: PathLike) -> bytes:
  return epath.Path(p).read_bytes()


def write_whole(p: PathLike, data: Union[bytes, str]) -> None:
  """Writes `data` to `p`, whole: a kill leaves the old content or the new.

  Local: into a '.partial' file beside it, renamed into place (removed if
  the write fails). A URL: one object upload, which is atomic.
  """
  data = data.encode() if isinstance(data, str) else data
  if is_url(p):
    epath.Path(p).write_bytes(data)
    return
  partial = os.fspath(p) + '.partial'
  os.makedirs(os.path.dirname(partial) or '.', exist_ok=True)
  try:
    with open(partial, 'wb') as f:
      f.write(data)
    os.replace(partial, p)
  except BaseException:
    if os.path.exists(partial):
      os.remove(partial)
    raise


def isdir(p: PathLike) -> bool:
  return epath.Path(p).is_dir()


def rename(source: PathLike, target: PathLike) -> None:
  """Moves a file or folder (in a bucket: copies, then deletes)."""
  epath.Path(source).rename(target)


def makedirs(p: PathLike) -> None:
  """A folder and its parents (in a bucket, folders are name prefixes)."""
  epath.Path(p).mkdir(parents=True, exist_ok=True)


def listdir(p: PathLike) -> list[str]:
  """The names in folder `p` (none where it does not exist)."""
  folder = epath.Path(p)
  if not folder.is_dir():
    return []
  return sorted(child.name for child in folder.iterdir())


def remove(p: PathLike) -> None:
  """Removes a file or a whole folder, if there."""
  target = epath.Path(p)
  if target.is_dir():
    target.rmtree()
  elif target.exists():
    target.unlink()


def where(p: PathLike) -> str:
  """How to show `p` to a user: a URL as given, a local path absolute."""
  return os.fspath(p) if is_url(p) else os.path.abspath(p)


# Cloud Storage itself (google-cloud-storage), for what paths cannot say:
# does the bucket exist and answer, and create an object only if absent.


def _gcs():
  try:
    from google.cloud import storage as gcs  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.UserError(
        "gs:// paths need Cloud Storage's clients: pip install "
        "'mixer_jax[gcs]' (google-cloud-storage, gcsfs).") from None
  return gcs


@functools.cache
def _client(endpoint: Optional[str]):
  """A client of the real service (application-default credentials) or, with
  STORAGE_EMULATOR_HOST set, of that server."""
  del endpoint  # The cache key: the client reads it from the environment.
  return _gcs().Client()


def _bucket_and_name(url: PathLike) -> tuple[str, str]:
  bucket, _, name = os.fspath(url)[len('gs://'):].partition('/')
  return bucket, name


def _blob(url: PathLike):
  bucket, name = _bucket_and_name(url)
  return _client(os.environ.get('STORAGE_EMULATOR_HOST')).bucket(
      bucket).blob(name)


def check_bucket(url: PathLike, *, what: str) -> None:
  """Raises a one-line errors.UserError within BUCKET_TIMEOUT_S unless the
  bucket of gs:// URL `url` exists and answers (other paths: nothing)."""
  if not os.fspath(url).startswith('gs://'):
    return
  from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
  from google.api_core import retry  # pylint: disable=g-import-not-at-top
  import google.auth.exceptions  # pylint: disable=g-import-not-at-top
  bucket, _ = _bucket_and_name(url)
  try:
    found = _client(os.environ.get('STORAGE_EMULATOR_HOST')).bucket(
        bucket).exists(timeout=10, retry=retry.Retry(
            deadline=BUCKET_TIMEOUT_S))
  except google.auth.exceptions.DefaultCredentialsError:
    raise errors.UserError(
        f'{what} {url}: no credentials for Cloud Storage (a Cloud TPU VM '
        "uses its service account; elsewhere run 'gcloud auth "
        "application-default login').") from None
  except exceptions.Forbidden as e:
    raise errors.UserError(
        f'{what} {url}: no permission to use bucket gs://{bucket} '
        f'({errors.describe(e)[:200]}).') from None
  except (exceptions.RetryError, exceptions.GoogleAPIError, OSError) as e:
    raise errors.UserError(
        f'{what} {url}: Cloud Storage did not answer within '
        f'{BUCKET_TIMEOUT_S} s ({errors.describe(e)[:160]}); check the '
        'network.') from None
  if not found:
    raise errors.MissingError(
        f'{what} {url}: bucket gs://{bucket} does not exist; create it '
        f'(gcloud storage buckets create gs://{bucket}) or use another.')


def create_object(url: PathLike, text: str) -> Optional[int]:
  """Creates gs:// object `url` holding `text` only if there is none: its
  generation, or None where one exists."""
  from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
  blob = _blob(url)
  try:
    blob.upload_from_string(text, if_generation_match=0)
  except exceptions.PreconditionFailed:
    return None
  return blob.generation


def read_object(url: PathLike) -> tuple[Optional[str], Optional[int]]:
  """(text, generation) of gs:// object `url`, or (None, None)."""
  from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
  blob = _blob(url)
  try:
    blob.reload()
    return blob.download_as_text(), blob.generation
  except exceptions.NotFound:
    return None, None


def replace_object(url: PathLike, text: str, generation: int
                   ) -> Optional[int]:
  """Replaces gs:// object `url` if it is still `generation`: the new
  generation, or None where another writer came first."""
  from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
  blob = _blob(url)
  try:
    blob.upload_from_string(text, if_generation_match=generation)
  except (exceptions.PreconditionFailed, exceptions.NotFound):
    return None
  return blob.generation


def delete_object(url: PathLike, generation: int) -> None:
  """Deletes gs:// object `url` if it is still `generation`."""
  from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
  if read_object(url)[1] != generation:
    return  # Another writer's now (the precondition below says so too).
  try:
    _blob(url).delete(if_generation_match=generation)
  except (exceptions.PreconditionFailed, exceptions.NotFound):
    pass
