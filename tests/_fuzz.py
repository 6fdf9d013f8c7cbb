"""Helpers for tests that must not hang: a per-call deadline and a worker-process fuzz runner.

:func:`deadline` raises :class:`TimeoutError` in the main thread after a few seconds
(``setitimer``): a blocking ``open()`` or ``read()`` on a FIFO is interrupted by the signal,
so a regression fails the test instead of hanging the suite.

:func:`run_cases` runs each fuzz case in a spawned worker process under its own timeout; a
case that takes longer is a hang (the worker is killed and replaced), a worker that dies is
a crash. The case function classifies its own outcome and returns ``(kind, detail)``.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import signal
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

HANG = "hang"
CRASH = "crash"
START_TIMEOUT_S = 120.0  # a spawned worker imports torch first; CPUs here are shared


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError if the block runs longer than ``seconds`` (main thread, POSIX)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s: it blocks")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Report:
    """Outcome counts of a fuzz run, and the first few details of each kind."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        self.examples.setdefault(kind, [])
        if len(self.examples[kind]) < 3:
            self.examples[kind].append(detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _worker(connection: Connection, target: str) -> None:
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    connection.send(("ready", ""))
    while True:
        try:
            case = connection.recv()
        except EOFError:
            return
        try:
            result = function(case)
        except BaseException:
            result = (CRASH, traceback.format_exc(limit=8))
        connection.send(result)


class _Worker:
    def __init__(self, target: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, target), daemon=True)
        self.process.start()
        child.close()
        if not self.connection.poll(START_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"fuzz worker for {target} did not start")
        self.connection.recv()

    def stop(self) -> None:
        self.process.kill()
        self.process.join()
        self.connection.close()


def run_cases(target: str, cases: list[Any], timeout_s: float) -> Report:
    """``target`` (``"module:function"``) on every case, each within ``timeout_s``."""
    report = Report()
    worker = _Worker(target)
    try:
        for number, case in enumerate(cases):
            worker.connection.send(case)
            if not worker.connection.poll(timeout_s):
                report.add(HANG, f"case {number}")
                worker.stop()
                worker = _Worker(target)
                continue
            try:
                kind, detail = worker.connection.recv()
            except EOFError:  # the worker died (a segfault, an abort)
                report.add(CRASH, f"case {number}: worker exited {worker.process.exitcode}")
                worker.stop()
                worker = _Worker(target)
                continue
            report.add(kind, f"case {number}: {detail}")
    finally:
        worker.stop()
    return report
