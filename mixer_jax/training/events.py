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
"""TensorBoard event files, written and cut without TensorFlow, so that they
can live in a bucket like the rest of a run (through storage).

An event file is a sequence of TFRecords (length, masked CRC-32C of the
length, data, masked CRC-32C of the data), each an Event protocol buffer;
TensorBoard reads scalars from Summary values.
"""

import socket
import struct
import time

from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

PREFIX = 'events.out.tfevents'


def file_name() -> str:
  """A new event file's name, as TensorBoard's writers name theirs."""
  return f'{PREFIX}.{time.time():.6f}.{socket.gethostname()}.mixer_jax'


def record(data: bytes) -> bytes:
  """`data` framed as one TFRecord."""
  header = struct.pack('<Q', len(data))
  return (header + struct.pack('<I', masked_crc32c(header)) + data +
          struct.pack('<I', masked_crc32c(data)))


def first_event() -> bytes:
  """The record every event file starts with: its version."""
  return record(event_pb2.Event(wall_time=time.time(),
                                file_version='brain.Event:2')
                .SerializeToString())


def scalars(step: int, values: dict) -> bytes:
  """One record per scalar of `values` at `step`."""
  now = time.time()
  return b''.join(record(event_pb2.Event(
      wall_time=now, step=step, summary=summary_pb2.Summary(value=[
          summary_pb2.Summary.Value(tag=name, simple_value=value)]))
      .SerializeToString()) for name, value in values.items())


def read_records(data: bytes) -> tuple[list[bytes], bool]:
  """(the records of an event file's bytes, whether it ends damaged): a file
  cut short by a kill keeps the records before the cut."""
  found, at = [], 0
  while at < len(data):
    if at + 12 > len(data):
      return found, True
    header = data[at:at + 8]
    (length,) = struct.unpack('<Q', header)
    (header_crc,) = struct.unpack('<I', data[at + 8:at + 12])
    end = at + 12 + length + 4
    if header_crc != masked_crc32c(header) or end > len(data):
      return found, True
    payload = data[at + 12:end - 4]
    if struct.unpack('<I', data[end - 4:end])[0] != masked_crc32c(payload):
      return found, True
    found.append(payload)
    at = end
  return found, False


def cut_after(data: bytes, step: int) -> bytes:
  """The event file's bytes without the events past `step` (and without a
  damaged end)."""
  found, _ = read_records(data)
  return b''.join(record(r) for r in found
                  if event_pb2.Event.FromString(r).step <= step)
