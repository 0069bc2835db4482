"""CUDA graph capture emulated on a CPU, to check that a step program can be captured at all.

A CUDA graph records the kernels of one run and replays them on the same memory, without
running the Python that launched them. `emulate_capture` records the aten operations of one
run of each kind of step (`TorchDispatchMode`) and replays exactly those operations on the same
tensors: anything a step decides in Python from state that changes between steps (a position,
a counter) is frozen at its recorded value, as in a real graph, and the results go wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from models import StepProgram


class Recording(TorchDispatchMode):
    """Every aten operation run under it, with its arguments, results, and whether its
    result is a view of an input (some operations, e.g. `to`, alias only sometimes)."""

    def __init__(self) -> None:
        super().__init__()
        self.operations: list[tuple[Any, tuple[Any, ...], dict[str, Any], Any, bool]] = []

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {_address(leaf) for leaf in tree_leaves((args, kwargs))}
        view = any(_address(leaf) in inputs - {None} for leaf in tree_leaves(out))
        self.operations.append((func, args, kwargs, out, view))
        return out


def _address(value: object) -> int | None:
    if isinstance(value, torch.Tensor):
        return value.untyped_storage().data_ptr()
    return None


class EmulatedGraph:
    """Replays recorded operations on the recorded tensors: views alias the same memory as
    when recorded, in-place and `out=` operations write it again, and the results of the
    others are copied into the tensors they produced when recorded (a graph's static memory)."""

    def __init__(self, recording: Recording) -> None:
        self.operations = recording.operations

    def replay(self) -> None:
        with torch.inference_mode():
            for func, args, kwargs, out, view in self.operations:
                mutable = func._schema.is_mutable
                if view and not mutable:
                    continue
                result = func(*args, **kwargs)
                if not mutable:
                    for static, fresh in zip(tree_leaves(out), tree_leaves(result), strict=True):
                        if isinstance(static, torch.Tensor):
                            static.copy_(fresh)


def emulated_capture(self: StepProgram, state: list[torch.Tensor]) -> list[EmulatedGraph]:
    """`StepProgram._capture` on a CPU: record one run of each kind, each undone afterwards (a
    real capture runs nothing; its warm-up runs are undone the same way)."""
    tensors = [*self.stream.state(), *state, self.x]
    saved = [tensor.clone() for tensor in tensors]
    graphs = []
    for kind in range(self.stream.step_kinds):
        try:
            with torch.inference_mode(), Recording() as recording:
                self._body(kind)
        finally:
            with torch.inference_mode():
                for tensor, copy in zip(tensors, saved, strict=True):
                    tensor.copy_(copy)
        graphs.append(EmulatedGraph(recording))
    return graphs


@pytest.fixture
def emulated_graphs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Step programs made with `capture=True` replay emulated graphs (see the module)."""
    monkeypatch.setattr(StepProgram, "_capture", emulated_capture)
    yield
