"""mixer_jax.multihost.peers: what a waiting process says it waits for (the waits
themselves run in test_multihost)."""

import pytest

from mixer_jax.multihost import peers


@pytest.mark.parametrize('me, count, said', [
    (0, 2, 'process 1 of 2 (this is process 0)'),
    (1, 3, 'processes 0, 2 of 3 (this is process 1)'),
    (None, None, 'the other processes of the run')])  # --distributed.
def test_awaited(me, count, said):
  assert peers.awaited(me, count) == said
