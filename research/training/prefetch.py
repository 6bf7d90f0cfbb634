"""A background thread that computes `batch_fn(step)` ahead of the training loop.

    batches = Prefetcher(make_batch, end=num_steps, depth=2)
    train_loop(..., batch_fn=batches, ...)
    batches.close()

Host-side batch construction (graph sampling, host feature gathers, decoding) then overlaps the
device step. `make_batch` must be a pure function of the step (as `train_loop` requires), so a
prefetched batch is exactly the batch the loop would have built; asking for a step other than
the next one (a resumed run) restarts the thread at that step. An exception in the thread is
re-raised by the call that asks for the failed step.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class Prefetcher:
    """Callable `step -> make_batch(step)` that keeps `depth` future batches ready.

    Args:
      make_batch: `step -> batch`, pure in `step`.
      end: steps >= end are not prefetched (they are still computed on demand).
      depth: batches computed ahead (queue size).
      stride: step increment between calls (`steps_per_call` of the loop).
    """

    def __init__(
        self,
        make_batch: Callable[[int], Any],
        *,
        end: int | None = None,
        depth: int = 2,
        stride: int = 1,
    ):
        if depth < 1 or stride < 1:
            raise ValueError(f"depth and stride must be >= 1, got {depth}, {stride}")
        self._make, self._end, self._depth, self._stride = make_batch, end, depth, stride
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(depth)
        self._next: int | None = None

    def _run(self, start: int, q: queue.Queue, stop: threading.Event) -> None:
        step = start
        while not stop.is_set() and (self._end is None or step < self._end):
            try:
                item = (step, self._make(step), None)
            except BaseException as err:  # noqa: BLE001 - handed to the consumer
                item = (step, None, err)
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            step += self._stride

    def _restart(self, start: int) -> None:
        self.close()
        self._stop = threading.Event()
        self._queue = queue.Queue(self._depth)
        self._thread = threading.Thread(
            target=self._run, args=(start, self._queue, self._stop), daemon=True, name="prefetch"
        )
        self._thread.start()
        self._next = start

    def __call__(self, step: int) -> Any:
        if self._end is not None and step >= self._end:
            return self._make(step)
        if self._thread is None or self._next != step:
            self._restart(step)
        got, batch, err = self._queue.get()
        if got != step:  # cannot happen unless make_batch skips steps; fail loudly
            raise RuntimeError(f"prefetcher produced step {got}, expected {step}")
        if err is not None:
            self._thread = None
            raise err
        self._next = step + self._stride
        return batch

    def close(self) -> None:
        """Stops the thread (waits for the batch it is computing)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._next = None

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
