"""Run a function over many jobs in worker processes that can be killed.

``concurrent.futures.ProcessPoolExecutor`` cannot stop one task: a file whose read blocks forever (a FIFO, a dead
network mount, a decoder stuck in C code) holds its worker for good, and a worker that crashes (a decoder
segfault) breaks the whole pool. Here each worker gets its jobs over its own pipe, at most two at a time (the one
it runs and the next, so it never waits for the parent), so the parent knows which job each worker runs and since
when: a job past its timeout has its worker killed (SIGKILL) and replaced, and the job queued behind it goes to
another worker; a worker that dies costs only its job; the other workers go on. Per-worker pipes (no shared
queue) mean a killed worker can never leave a lock held that the others need.

Workers ignore Ctrl-C and die quietly on SIGTERM (the parent decides what happens to the run), and on Linux they
are killed by the kernel when the parent dies (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the parent leaves no
worker behind, hung or not.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = ["JobFailed", "default_workers", "map_unordered"]

_PR_SET_PDEATHSIG = 1
_DEPTH = 2  # jobs sent ahead to each worker: the next one waits in its pipe while the parent handles a result


@dataclass(frozen=True)
class JobFailed:
    """A job that gave no result: ``timed_out`` when it ran past the timeout, else its worker died or raised."""

    reason: str
    timed_out: bool = False


def default_workers() -> int:
    """The CPU cores this process may use (its affinity mask: what SLURM or ``taskset`` granted), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _work(conn: Connection, fn: Callable[[Any], Any], parent_pid: int, inherited: list[Connection]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a handler forked from the parent
    _die_with_parent(parent_pid)
    for other in inherited:  # forked copies of the parent's pipe ends: closed, so a dead parent reads as EOF
        other.close()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, job = message
        try:
            result = fn(job)
        except Exception as e:  # reported for this job; the worker goes on
            result = JobFailed(f"{type(e).__name__}: {e}")
        conn.send((index, result))


@dataclass
class _Slot:
    process: Any
    conn: Connection
    held: deque[int] = field(default_factory=deque)  # jobs sent, in order; the first is running
    deadline: float = float("inf")  # of the running job


def _context() -> Any:
    # fork: workers start in milliseconds and inherit the imported decoders; elsewhere the platform's default
    return mp.get_context("fork") if sys.platform.startswith("linux") else mp.get_context()


def _died(process: Any) -> str:
    process.join(1.0)
    code = process.exitcode
    if code is not None and code < 0:
        return f"the worker process died ({signal.Signals(-code).name})"
    return f"the worker process died (exit code {code})"


def map_unordered(
    fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int, timeout: float | None = None
) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, fn(jobs[index]))`` for every job, in completion order, from ``workers`` processes.

    ``fn`` must be a module-level function (picklable where processes are spawned). A job that runs past
    ``timeout`` seconds (``None``: no limit) or whose worker dies yields a :class:`JobFailed` (the worker is killed
    and replaced when more jobs remain); one that raises yields a :class:`JobFailed` naming the exception. Closing
    the iterator early (or an exception in the caller, Ctrl-C included) stops every worker.
    """
    if workers < 1:
        raise ValueError(f"workers={workers}: need at least 1 worker process")
    ctx = _context()
    todo = deque(range(len(jobs)))
    slots: list[_Slot | None] = [None] * min(workers, len(jobs))  # None: (re)started when a job needs it

    def start() -> _Slot:
        parent_end, child_end = ctx.Pipe()
        fork = ctx.get_start_method() == "fork"
        inherited = [s.conn for s in slots if s is not None] + [parent_end] if fork else []
        process = ctx.Process(target=_work, args=(child_end, fn, os.getpid(), inherited), daemon=True)
        process.start()
        child_end.close()
        return _Slot(process, parent_end)

    def retire(slot: _Slot) -> None:
        slot.process.kill()
        slot.process.join(1.0)  # not longer: a worker in uninterruptible I/O dies only when its read returns
        slot.conn.close()

    def fail(i: int, slot: _Slot, reason: str, timed_out: bool = False) -> tuple[int, JobFailed]:
        """Kill the slot's worker; its running job fails, the ones queued behind it go back to ``todo``."""
        retire(slot)
        slots[i] = None
        todo.extendleft(reversed(list(slot.held)[1:]))
        return slot.held[0], JobFailed(reason, timed_out)

    try:
        while True:
            for i, slot in enumerate(slots):
                while todo and (slot is None or len(slot.held) < _DEPTH):
                    slot = slots[i] = slot or start()
                    if not slot.held:
                        slot.deadline = time.monotonic() + timeout if timeout else float("inf")
                    slot.held.append(todo.popleft())
                    slot.conn.send((slot.held[-1], jobs[slot.held[-1]]))
            busy = [s for s in slots if s is not None and s.held]
            if not busy:
                return
            wait_s = min(s.deadline for s in busy) - time.monotonic()
            ready = set(wait([s.conn for s in busy], timeout=None if wait_s == float("inf") else max(wait_s, 0)))
            for i, slot in enumerate(slots):
                if slot is None or not slot.held:
                    continue
                if slot.conn in ready:
                    try:
                        index, result = slot.conn.recv()
                    except (EOFError, OSError):
                        yield fail(i, slot, _died(slot.process))
                        continue
                    slot.held.popleft()
                    slot.deadline = time.monotonic() + timeout if timeout and slot.held else float("inf")
                    yield index, result
                elif time.monotonic() >= slot.deadline:
                    yield fail(i, slot, f"timed out after {timeout:g} s (its worker process was killed)", True)
    finally:
        live = [s for s in slots if s is not None]
        for slot in live:
            if not slot.held:
                try:
                    slot.conn.send(None)
                except OSError:
                    pass
        for slot in live:
            slot.process.join(0 if slot.held else 1.0)
            if slot.process.is_alive():
                retire(slot)
            slot.conn.close()
