"""Work in other processes that is watched, not trusted: a child that dies is seen at once.

`multiprocessing.Pool` replaces a worker killed by a signal (the OOM killer, say) and waits forever
for the batch that died with it. `OrderedPool` gives each worker its own pipe and waits on the
workers' pipes and their process sentinels together, so the death of a worker surfaces within a
poll interval as `WorkerDied`, naming the signal or exit code and the likely cause. The stage then
stops: no output, no temporary, exit 1; rerunning it redoes the shard from the start (a lost batch
is not retried: the usual cause, memory, would kill it again).
"""

import multiprocessing
import signal
import traceback
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from pipeline.core.errors import PipelineError, describe_exit

IDLE_EXIT_S = 5.0  # an idle worker's time to end after its pipe closes, before it is killed


class WorkerDied(PipelineError):
    """A worker process ended before the pool was closed; the message says how, and what to try."""


def _serve(connection: Connection, initializer: Callable | None, initargs: tuple, function: Callable) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return  # the parent closed its end: no more work
        try:
            try:
                connection.send((True, function(*task)))
            except Exception as exc:  # noqa: BLE001  (any failure of the work goes back to the parent)
                try:
                    connection.send((False, exc))
                except Exception:  # noqa: BLE001  (an exception that does not pickle)
                    connection.send((False, RuntimeError(traceback.format_exc())))
        except (BrokenPipeError, ConnectionResetError):
            return  # the parent stopped (it has its own error to report) while this batch was being encoded


class OrderedPool:
    """`workers` processes running `function(*task)`, results returned in submission order.

    Each worker holds at most one task, so a send never blocks on a worker busy sending a result,
    and the parent always knows which task each worker holds. `hint` ends a WorkerDied message.
    """

    def __init__(
        self,
        function: Callable,
        workers: int,
        initializer: Callable | None = None,
        initargs: tuple = (),
        hint: str = "",
        poll_s: float = 1.0,
    ):
        context = multiprocessing.get_context("spawn")
        self.hint, self.poll_s = hint, poll_s
        self.connections: list[Connection] = []
        self.processes = []
        for _ in range(workers):
            parent, child = context.Pipe(duplex=True)
            process = context.Process(target=_serve, args=(child, initializer, initargs, function), daemon=True)
            process.start()
            child.close()
            self.connections.append(parent)
            self.processes.append(process)
        self.holding: list[int | None] = [None] * workers  # task number each worker is working on
        self.waiting: deque[tuple[int, tuple]] = deque()  # submitted, not yet handed to a worker
        self.results: dict[int, Any] = {}
        self.submitted = self.returned = 0

    def submit(self, *task: Any) -> None:
        self.waiting.append((self.submitted, task))
        self.submitted += 1
        self._hand_out()

    def pending(self) -> int:
        return self.submitted - self.returned

    def next_result(self) -> Any:
        """The result of the oldest task not yet returned; raises WorkerDied or the worker's exception."""
        wanted = self.returned
        while wanted not in self.results:
            self._receive()
        self.returned += 1
        ok, value = self.results.pop(wanted)
        if not ok:
            raise value
        return value

    def _hand_out(self) -> None:
        for i, held in enumerate(self.holding):
            if held is None and self.waiting:
                number, task = self.waiting.popleft()
                try:
                    self.connections[i].send(task)
                except (BrokenPipeError, ConnectionResetError):
                    self._died(i)
                self.holding[i] = number

    def _receive(self) -> None:
        busy = [i for i, held in enumerate(self.holding) if held is not None]
        ready = wait([self.connections[i] for i in busy] + [p.sentinel for p in self.processes], timeout=self.poll_s)
        for i in busy:  # results first: a worker that answered and then died still delivered
            if self.connections[i] in ready:
                try:
                    self.results[self.holding[i]] = self.connections[i].recv()
                except (EOFError, OSError):
                    # its end closed before or inside a message ("got end of file during message"):
                    # only a dying worker closes its end while the parent holds the other
                    self._died(i)
                self.holding[i] = None
        for i, process in enumerate(self.processes):
            if process.sentinel in ready:
                self._died(i)
        self._hand_out()

    def _died(self, i: int) -> None:
        process = self.processes[i]
        process.join()
        what = "while holding a batch" if self.holding[i] is not None else "while idle"
        raise WorkerDied(
            f"a worker process (pid {process.pid}) died with {describe_exit(process.exitcode)} "
            f"{what}" + (f"; {self.hint}" if self.hint else "")
        )

    def close(self) -> None:
        """Stop every worker: an idle one ends by itself when its pipe closes (cleaning up after
        itself); one still holding a task is killed at once (its work is no longer wanted)."""
        for connection in self.connections:
            connection.close()
        for held, process in zip(self.holding, self.processes):
            if held is None:
                process.join(timeout=IDLE_EXIT_S)
            if process.is_alive():
                process.kill()
            process.join()
