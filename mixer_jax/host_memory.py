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
"""Host memory on XLA:CPU: each step reuses the blocks the last one freed.

XLA:CPU allocates a compiled program's temporaries afresh at every call (961 MB
for S/32's train step at batch 32). glibc's malloc serves a block that large
with mmap and unmaps it when it is freed, so every call faults its temporaries
in again, page by page, each page zeroed by the kernel: 240,000 page faults
and about 0.7 s of CPU time per S/32 train step on a 2-core VM
(experiments/README.md). With mmap and trimming off, glibc keeps freed blocks
in its heap and the next call reuses them, without a fault.

That holds for glibc's main heap only: its other arenas, which other threads
get, map any block over 64 MB afresh whatever the settings. So the CPU backend
runs single-device programs on the thread that calls them (jax's
`jax_cpu_enable_async_dispatch` off), and, where jax can start no backend but
the CPU's, every thread allocates from the main heap (`M_ARENA_MAX` 1), set
before XLA's threads first allocate: YNNPACK's own buffers inside a fusion,
allocated on XLA's worker threads (77 MB each for B/16's channel MLP at batch
32), are then reused too. These settings are process-wide; the entry points
(train, benchmark, profile) make them, a library import does not: a script or
notebook of one's own calls reuse_freed_memory() first. Where another malloc
is preloaded (tcmalloc, jemalloc), mallopt is its own and may ignore these
settings; the benchmark's page faults per step say whether steps still fault.
"""

import ctypes
import importlib.metadata
import importlib.util
import platform
import sys

from absl import flags
import jax

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# The entry points' switch: train, benchmark and profile read it.
REUSE_HOST_MEMORY = flags.DEFINE_boolean(
    'reuse_host_memory', True, 'On the CPU backend, keep the memory a step '
    'frees for the next one instead of faulting it in again '
    '(mixer_jax/host_memory.py).')


def cpu_is_the_only_backend() -> bool:
  """Whether jax can start no backend but the CPU's, told without starting one.

  JAX_PLATFORMS=cpu, or no accelerator plugin installed: jax finds GPU and
  other plugins as `jax_plugins` entry points or modules, and TPUs by libtpu.
  """
  if jax.config.jax_platforms:
    return jax.config.jax_platforms == 'cpu'
  return not (importlib.metadata.entry_points(group='jax_plugins') or
              importlib.util.find_spec('jax_plugins') or
              importlib.util.find_spec('libtpu'))


def reuse_freed_memory() -> bool:
  """Keeps XLA:CPU's per-call temporaries in the heap between calls.

  Call before jax's backends start, i.e. before the process's first jax
  computation or device query: the CPU backend reads its dispatch setting when
  it is created. Returns whether the allocator settings were made: on Linux
  with glibc, where the default backend is the CPU. Elsewhere (a GPU or TPU
  backend, another C library) nothing changes beyond the CPU backend's
  synchronous dispatch, which only the host-side programs there use.
  """
  if not sys.platform.startswith('linux') or platform.libc_ver()[0] != 'glibc':
    return False
  mallopt = ctypes.CDLL(None).mallopt
  if cpu_is_the_only_backend():  # Known before any backend starts.
    mallopt(_M_ARENA_MAX, 1)
  jax.config.update('jax_cpu_enable_async_dispatch', False)
  if jax.default_backend() != 'cpu':
    return False
  # -1: never give the top of the heap back to the system (man mallopt).
  return (mallopt(_M_MMAP_MAX, 0) == 1 and
          mallopt(_M_TRIM_THRESHOLD, -1) == 1)


def reuse_unless_flagged_off() -> bool:
  """reuse_freed_memory() unless --noreuse_host_memory: the entry points' call.

  Like it, before jax's backends start; returns whether the settings were made.
  """
  return REUSE_HOST_MEMORY.value and reuse_freed_memory()
