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
"""The processes of one run: they all join, and stay, in bounded time.

JAX's coordination service (jax.distributed) already ends every process
when one stops sending heartbeats, and gives up on processes that never
join; but it does so by aborting, after its timeouts, with C++ stack dumps
in which the lost process is hard to find. Here each process watches for
both before JAX would act (the caller gives JAX longer timeouts:
JAX_TIMEOUT_FACTOR), and ends with one line that says what happened. The
loss of process 0, which runs JAX's service, aborts the others at once;
their parents say so (supervisor.py). For a command's `main` (these end the
process).
"""

import atexit
import json
import os
import sys
import threading
import time

import jax
from orbax.checkpoint import multihost

from mixer_jax.multihost import supervisor

_ALIVE = 'mixer_jax/alive'
_LAUNCH = 'mixer_jax/launch'
_DONE = 'done'
# JAX's timeouts, as multiples of ours: JAX heartbeats every half of its
# timeout or more often, so a lost process is found by JAX 1.5 x ours after
# its death at the earliest, by us within 1.1 x ours.
JAX_TIMEOUT_FACTOR = 3


def end(program: str, message: str) -> None:
  """`PROGRAM: error: MESSAGE` and exit 1, from any thread, at once (the
  main thread may be blocked in a collective that never completes)."""
  print(f'{program}: error: {message}', file=sys.stderr, flush=True)
  os._exit(1)  # pylint: disable=protected-access


def end_unless(done: threading.Event, *, seconds: float, program: str,
               message: str) -> None:
  """Ends the process with `message` unless `done` is set within
  `seconds`."""
  def watch():
    if not done.wait(seconds):
      end(program, message)
  threading.Thread(target=watch, daemon=True, name='end_unless').start()


# When a waiting process first says so, and how often after.
FIRST_WORD_S, WORD_EVERY_S = 3, 30


def awaited(me, count) -> str:
  """'process 1 of 2', 'processes 0, 2 of 3' (all but `me`), or 'the other
  processes' where the count is not known here."""
  if me is None or not count:
    return 'the other processes of the run'
  others = [str(i) for i in range(count) if i != me]
  return (f'process{"es" if len(others) > 1 else ""} {", ".join(others)} of '
          f'{count} (this is process {me})')


def say_while_waiting(done: threading.Event, *, seconds: float, program: str,
                      awaited: str) -> None:
  """Until `done`: after FIRST_WORD_S, then every WORD_EVERY_S, a line on
  stderr saying what this process waits for and how long it still will."""
  start = time.monotonic()

  def say():
    pause = FIRST_WORD_S
    while not done.wait(pause):
      left = seconds - (time.monotonic() - start)
      print(f'{program}: waiting for {awaited}; giving up in {left:.0f} s.',
            file=sys.stderr, flush=True)
      pause = WORD_EVERY_S
  threading.Thread(target=say, daemon=True, name='waiting').start()


def check_same(program: str, *, timeout_s: float, **launch) -> None:
  """Ends this process with one line unless every process of the run was
  launched with the same `launch` values (--num_processes: the run has
  process 0's count, whatever the others were told)."""
  if jax.process_count() == 1:
    return
  client = multihost.get_jax_distributed_client()
  me = jax.process_index()
  mine = json.dumps(launch, sort_keys=True)
  client.key_value_set(f'{_LAUNCH}/{me}', mine)
  differ = []
  for peer in range(jax.process_count()):
    theirs = json.loads(client.blocking_key_value_get(
        f'{_LAUNCH}/{peer}', int(timeout_s * 1000)))
    differ += [f'--{k}={v} here, {theirs.get(k)} on process {peer}'
               for k, v in launch.items() if theirs.get(k) != v]
  # Every process compares before any ends (process 0's end would abort the
  # others before they could say why).
  client.wait_at_barrier(_LAUNCH, int(timeout_s * 1000))
  if differ:
    end(program, f'the processes of the run were launched differently '
        f'({"; ".join(differ)}; the run has {jax.process_count()} '
        'processes): start every process with the same values.')


def watch(program: str, *, timeout_s: float) -> None:
  """Every process bumps a counter in JAX's key-value store every
  timeout_s / 10 and reads the others'; a peer whose counter has not moved
  for timeout_s ends this process with one line naming it. A process that
  ends normally says so (at exit) and is not waited for."""
  count, me = jax.process_count(), jax.process_index()
  if count == 1:
    return
  client = multihost.get_jax_distributed_client()
  limit, interval = timeout_s, max(timeout_s / 10, 0.2)
  exiting = threading.Event()  # This process ends normally: stop watching.

  def beat():
    beats, heard = 0, {}  # Peer -> (its last counter, when it changed).
    warned = set()  # Peers silent for a third of the limit, said so.
    while not exiting.wait(interval):
      beats += 1
      try:
        client.key_value_set(f'{_ALIVE}/{me}', str(beats),
                             allow_overwrite=True)
        found = dict(client.key_value_dir_get(_ALIVE))
      except Exception:  # pylint: disable=broad-except
        if exiting.is_set():  # JAX's client shut down at exit.
          return
        # Unreachable: the service on process 0 is gone.
        end(program, supervisor.LOST_PROCESS_0 + supervisor.AND_STOP)
      now = time.monotonic()
      for peer in range(count):
        value = found.get(f'{_ALIVE}/{peer}')
        if peer == me or value == _DONE:
          continue
        last, since = heard.get(peer, (None, now))
        if value != last:
          if peer in warned:
            warned.discard(peer)
            print(f'{program}: process {peer} of {count} answers again.',
                  file=sys.stderr, flush=True)
          heard[peer] = (value, now)
        elif now - since > limit / 3 and peer not in warned:
          warned.add(peer)
          print(f'{program}: process {peer} of {count} has not answered for '
                f'{now - since:.0f} s; this process stops once it has been '
                f'silent for {limit:.0f} s (--heartbeat_timeout).',
                file=sys.stderr, flush=True)
        if value == last and now - since > limit:
          end(program, f'process {peer} of {count} stopped responding '
              f'{now - since:.0f} s ago (killed, or its host is gone); this '
              'process stops too. Start every process again to resume from '
              'the last checkpoint.')

  def say_done():  # Before JAX's own exit handler (registered before it).
    exiting.set()
    try:
      client.key_value_set(f'{_ALIVE}/{me}', _DONE, allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except
      pass  # The service is gone already: nobody is waiting.

  atexit.register(say_done)
  threading.Thread(target=beat, daemon=True, name='peers').start()
