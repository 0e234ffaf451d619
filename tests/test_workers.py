"""The pool's own contract with a worker that dies: wherever the death falls (before its answer, or
half-way through writing it), the parent raises WorkerDied naming the signal, never multiprocessing's
"got end of file during message". Real spawned processes, real SIGKILL."""

import gc
import os
import signal
import struct
import time
from multiprocessing.connection import Connection

import pytest

from pipeline.core.workers import OrderedPool, WorkerDied


def square(x: int) -> int:
    return x * x


def killed_before_answering(x: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return x


def killed_mid_answer(x: int) -> int:
    """Write the header of a 1,000-byte message and 7 bytes of it, as a worker the OOM killer stops
    inside `send` would, then die."""
    (connection,) = [o for o in gc.get_objects() if isinstance(o, Connection) and not o.closed]
    os.write(connection.fileno(), struct.pack("!i", 1000) + b"partial")
    os.kill(os.getpid(), signal.SIGKILL)
    return x


@pytest.mark.parametrize("function", [killed_before_answering, killed_mid_answer])
def test_a_worker_killed_before_or_inside_its_answer_is_named_with_its_signal(function):
    pool = OrderedPool(function, 1, hint="lower the workers", poll_s=0.2)
    began = time.monotonic()
    try:
        pool.submit(3)
        with pytest.raises(WorkerDied) as died:
            pool.next_result()
    finally:
        pool.close()
    assert time.monotonic() - began < 30
    message = str(died.value)
    assert "died with signal 9 (SIGKILL: killed, often by the out-of-memory killer) while holding a batch" in message
    assert message.endswith("; lower the workers")


def test_results_come_back_in_submission_order_from_every_worker():
    pool = OrderedPool(square, 2)
    try:
        for x in range(20):
            pool.submit(x)
        assert [pool.next_result() for _ in range(20)] == [x * x for x in range(20)]
        assert pool.pending() == 0
    finally:
        pool.close()
