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

XLA:CPU allocates a compiled program's temporaries afresh at every call (about
1 GB for S/32's train step at batch 32). glibc's malloc serves blocks that
large with mmap and unmaps them when freed, so every call faults its
temporaries in again, page by page, each page zeroed by the kernel. With mmap
and trimming off, glibc keeps freed blocks in its heap and the next call
reuses them.

That holds for glibc's main heap only; its other arenas map any block over
64 MB afresh. So single-device programs run on the calling thread (jax's
`jax_cpu_enable_async_dispatch` off) and, where jax can start no backend but
the CPU's, every thread allocates from the main heap (`M_ARENA_MAX` 1).

These settings are process-wide, so nothing here runs on import: a `main`
opts in (`--reuse_host_memory` of the train command and the benchmark), or a
script of one's own calls reuse_freed_memory() first thing.
"""

import ctypes
import importlib.metadata
import importlib.util
import platform
import sys

import jax

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


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

  Call before jax's backends start (the process's first computation or device
  query). Changes nothing and returns False unless jax can start no backend
  but the CPU's, on Linux with glibc; returns True once the settings are made.
  Where another malloc is preloaded (tcmalloc, jemalloc), mallopt is its own
  and may ignore them.
  """
  if (not sys.platform.startswith('linux') or
      platform.libc_ver()[0] != 'glibc' or not cpu_is_the_only_backend()):
    return False
  mallopt = ctypes.CDLL(None).mallopt
  jax.config.update('jax_cpu_enable_async_dispatch', False)
  # -1: never give the top of the heap back to the system (man mallopt).
  return (mallopt(_M_ARENA_MAX, 1) == 1 and mallopt(_M_MMAP_MAX, 0) == 1 and
          mallopt(_M_TRIM_THRESHOLD, -1) == 1)
