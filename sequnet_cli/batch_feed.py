"""Training batches drawn ahead of the step, in a background thread.

Reading excerpts, cutting pieces and padding them is host work; done between two steps it
leaves the device idle. `BatchFeed` draws the next batches while the current step runs (a few
ahead at most), pins them in page-locked memory when they go to a GPU so that their copies do
not wait, and hands them out in order.

Drawing ahead must not change what a checkpoint saves: a run stopped after step n resumes with
batch n + 1, although batches n + 1 and n + 2 may already have been drawn. So each batch comes
with the state of the run's data generator just after it was drawn, and the trainer saves the
state of the last batch it trained on. The thread draws random numbers only from the generator
it is given, never from the global ones (dropout draws from those, on the trainer's thread).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Self

import torch

from sequnet_cli.tasks import Batch

AHEAD = 2  # batches drawn ahead of the step: one in the queue, one being made


class _Done:
    """The end of the batches, or the exception that ended them."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class BatchFeed:
    """The batches of `batches`, drawn in a background thread, each with `generator`'s state
    after it was drawn; pinned for `device` when it is a GPU. Use as a context manager: the
    thread stops when the block ends, however it ends."""

    def __init__(
        self, batches: Iterator[Batch], generator: torch.Generator, device: torch.device
    ) -> None:
        self.batches, self.generator, self.device = batches, generator, device
        self.queue: queue.Queue[tuple[Batch, torch.Tensor] | _Done] = queue.Queue(AHEAD - 1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._draw, name="batch feed", daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stopping.set()
        while self.thread.is_alive():  # unblock a thread waiting for room in the queue
            try:
                self.queue.get(timeout=0.05)
            except queue.Empty:
                pass

    def __iter__(self) -> Iterator[tuple[Batch, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[Batch, torch.Tensor]:
        """The next batch and the generator's state after it; `StopIteration` at the end, and
        an exception of the drawing re-raised here."""
        item = self.queue.get()
        if isinstance(item, _Done):
            self.queue.put(item)  # every later call ends too
            if item.error is not None:
                raise item.error
            raise StopIteration
        return item

    def _draw(self) -> None:
        try:
            for batch in self.batches:
                state = self.generator.get_state()
                if self.device.type == "cuda":
                    batch = batch.pinned()
                if not self._put((batch, state)):
                    return
        except Exception as error:  # noqa: BLE001 (handed to the trainer's thread, raised there)
            self._put(_Done(error))
            return
        self._put(_Done())

    def _put(self, item: tuple[Batch, torch.Tensor] | _Done) -> bool:
        """Queue `item` once there is room; False when the feed is stopping."""
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False
