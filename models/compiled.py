"""Step programs compiled for the CPU: each frequent kind of step, the caller's draw included, as
one function compiled by PyTorch's inductor (DESIGN.md, "Devices and scale").

At batch 1 on a CPU a stream step is dozens of small operations, and dispatching each from
Python costs more than its arithmetic. A `StepProgram` on a fixed-index stream runs the same
operations on the same memory at every step of a kind (`models.capture`), which is what a CUDA
graph replays on a GPU; on a CPU the same body is compiled, kind by kind, into one C++ function:

1. Every kind of step runs once under a recorder that notes the tensors it reads and writes
   (its caches, its weights, the caller's positions and random numbers).
2. Those tensors' memory moves into a few arenas (one per dtype, the written apart from the
   read-only), and every tensor object that held it now views its arena: the stream and the
   caller keep using their tensors as before, and eager steps of the kinds that are not
   compiled, priming and resets see the memory that the compiled steps see.
3. Each compiled kind is traced (`make_fx`: its aten operations, every tensor a view of an
   arena input), made functional, its matrix-vector products written as sums (so that they
   fuse with the gates around them instead of calling a BLAS routine each), and compiled by
   inductor into a function of the arenas alone, so that a call costs a few microseconds
   whatever the size of the network.

Compiling takes seconds per kind, and tracing a second or so. The recording also gives each
kind a key: a hash of its operations with their arguments' shapes and places in the arenas,
which is all a compiled step depends on (the network's shapes, not its weights). A caller's
`Store` keeps compiled steps by key, so that a later program of the same shapes loads them
without tracing. Compiling needs a C++ compiler; `CompileError` says why it could not compile.
"""

from __future__ import annotations

import hashlib
import math
import platform
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import torch
from torch import Tensor, fx
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# Inductor settings for the step functions: the C++ wrapper calls the fused kernel without
# Python in between; the arenas never change shape, so no size checks on every call; one fused
# kernel per kind leaves nothing for a pool of compile workers to share; and the instruction
# set is the CPU's best without building a probe program per instruction set at every start
# (a compiler that cannot build it fails the compilation, which then falls back).
_INDUCTOR_OPTIONS = {
    "cpp_wrapper": True,
    "size_asserts": False,
    "alignment_asserts": False,
    "scalar_asserts": False,
    "compile_threads": 1,
    "cpp.vec_isa_ok": True,
}

Body = Callable[[int], None]  # runs one step of a kind


class CompileError(RuntimeError):
    """Compiling a step program failed (no C++ compiler, an unsupported operation, ...)."""


Compiled = Callable[..., object]  # a compiled step: called with the arenas


class Store(Protocol):
    """Where compiled steps are kept between programs, by key (`CompiledKinds`)."""

    def load(self, key: str) -> Compiled | None:
        """The compiled step saved under `key`, or None."""
        ...

    def save(self, key: str, compiled: Compiled) -> None:
        """Keep `compiled` under `key`."""
        ...


class CompiledKinds:
    """The first `compiled` of `kinds` of a step program's body compiled into one function
    each, over arenas that hold every tensor a step of any of `kinds` touches.

    `body(kind)` runs one step of `kind` eagerly; `tensors` are the tensors it reads before
    writing them, restored after each run that recording and tracing make. `store` keeps the
    compiled steps for later programs; with `stored_only`, a kind that `store` does not hold is
    not compiled but left to run eagerly, and listed in `missing`. `run(kind)` calls a compiled
    step.
    """

    def __init__(
        self,
        body: Body,
        kinds: Sequence[int],
        compiled: int,
        tensors: Sequence[Tensor],
        store: Store | None = None,
        stored_only: bool = False,
    ) -> None:
        self.missing: list[int] = []  # kinds to compile that `store` did not hold
        try:
            self._build(body, kinds, compiled, tensors, store, stored_only)
        except CompileError:
            raise
        except Exception as error:  # tracing and compiling have no error type of their own
            raise CompileError(_first_line(error)) from error

    def _build(
        self,
        body: Body,
        kinds: Sequence[int],
        compiled: int,
        tensors: Sequence[Tensor],
        store: Store | None,
        stored_only: bool,
    ) -> None:
        touched = _Touched()
        for kind in kinds:
            with _undone(tensors), touched:
                touched.start(kind, describe=kind in kinds[:compiled])
                body(kind)
        touched.finish()
        self.arenas = _pack(touched)
        places = {arena.untyped_storage().data_ptr() for arena in self.arenas}
        if any(tensor.untyped_storage().data_ptr() not in places for tensor in tensors):
            raise CompileError("a tensor the steps read is touched by no step")
        self.functions: dict[int, Compiled] = {}
        for kind in kinds[:compiled]:
            key = touched.key(kind)
            with _inductor_options():  # loading reads them too (the instruction set)
                function = store.load(key) if store is not None else None
            if function is None and stored_only:
                self.missing.append(kind)
                continue
            if function is None:
                function = _compile(_lifted(body, kind, tensors, self.arenas), self.arenas)
                if store is not None:
                    store.save(key, function)
            self.functions[kind] = function

    def __contains__(self, kind: int) -> bool:
        return kind in self.functions

    def run(self, kind: int) -> None:
        """One compiled step of `kind`."""
        self.functions[kind](*self.arenas)


@contextmanager
def _undone(tensors: Sequence[Tensor]) -> Iterator[None]:
    """Restores `tensors` on exit: what recording or tracing a step changed in them."""
    saved = [tensor.clone() for tensor in tensors]
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, copy in zip(tensors, saved, strict=True):
                tensor.copy_(copy)


class _Touched(TorchDispatchMode):
    """Records, over the steps run under it, every tensor object passed to an aten operation
    that the steps did not make themselves (by storage), the storages some operation writes (in
    place or `out=`), and for each kind of step a description of its operations (`key`)."""

    def __init__(self) -> None:
        super().__init__()
        self.tensors: dict[int, list[Tensor]] = {}  # storage -> the tensor objects viewing it
        self.written: set[int] = set()
        self._made: dict[int, int] = {}  # id of a tensor the current step made -> its number
        self._operations: dict[int, list[str]] = {}  # kind -> its operations, described
        self._order: dict[int, int] = {}  # storage -> its number, in order of first use
        self._kind, self._describing = 0, True
        self.layout = ""

    def start(self, kind: int, describe: bool = True) -> None:
        """The steps that follow are of `kind`; `describe`: note their operations (`key`)."""
        self._kind, self._made, self._describing = kind, {}, describe
        self._operations[kind] = []

    def finish(self) -> None:
        """The recording is complete: note the storages' layout, which the arenas follow."""
        self.layout = repr(
            [
                (views[0].untyped_storage().nbytes(), str(views[0].dtype), key in self.written)
                for key, views in self.tensors.items()
            ]
        )

    def key(self, kind: int) -> str:
        """What a compiled step of `kind` depends on, hashed: its operations, the arenas'
        layout (all the storages in order, with their sizes, dtypes and whether they are
        written), this PyTorch, this machine's instruction set, the CPU threads (a kernel
        compiled for several splits its loops) and the compiler options."""
        parts = [
            torch.__version__,
            platform.machine(),
            torch.backends.cpu.get_cpu_capability(),
            str(torch.get_num_threads()),
            repr(sorted(_INDUCTOR_OPTIONS.items())),
            self.layout,
            *self._operations[kind],
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]

    def _describe(self, value: object) -> str:
        """An argument as a compiled step sees it: a tensor by its place, not its values."""
        if isinstance(value, list | tuple):
            return f"[{', '.join(self._describe(item) for item in value)}]"
        if not isinstance(value, Tensor):
            return repr(value)
        made = self._made.get(id(value))
        if made is not None:
            return f"made {made}"
        storage = self._order[value.untyped_storage().data_ptr()]
        where = (storage, value.storage_offset(), tuple(value.shape), value.stride())
        return f"storage {where} {value.dtype}"

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        schema = func._schema
        given = {**dict(zip((a.name for a in schema.arguments), args)), **kwargs}
        for argument in schema.arguments:
            for tensor in tree_leaves(given.get(argument.name)):
                if not isinstance(tensor, Tensor) or id(tensor) in self._made:
                    continue
                key = tensor.untyped_storage().data_ptr()
                self._order.setdefault(key, len(self._order))
                views = self.tensors.setdefault(key, [])
                if all(tensor is not view for view in views):
                    views.append(tensor)
                if argument.alias_info is not None and argument.alias_info.is_write:
                    self.written.add(key)
        if self._describing:
            described = [f"{name}={self._describe(value)}" for name, value in given.items()]
            self._operations[self._kind].append(f"{func} {' '.join(described)}")
        out = func(*args, **kwargs)
        for tensor in tree_leaves(out):
            if isinstance(tensor, Tensor) and all(tensor is not arg for arg in tree_leaves(given)):
                self._made[id(tensor)] = len(self._made)
        return out


def _pack(touched: _Touched) -> list[Tensor]:
    """Move every storage `touched` recorded into one arena per dtype and for the written ones,
    and point every recorded tensor object at its place there (the same values, new memory)."""
    groups: list[tuple[torch.dtype, bool]] = []  # (dtype, written) of each arena
    sizes: list[int] = []
    places: dict[int, tuple[int, int]] = {}  # storage -> (arena, offset in elements)
    for key, views in touched.tensors.items():
        group = (views[0].dtype, key in touched.written)
        if any(view.dtype != group[0] for view in views):
            raise CompileError("a step reads a tensor's memory as another dtype")
        if group not in groups:
            groups.append(group)
            sizes.append(0)
        arena = groups.index(group)
        align = max(1, 64 // views[0].element_size())  # 64 bytes, as allocations are
        offset = math.ceil(sizes[arena] / align) * align
        places[key] = (arena, offset)
        sizes[arena] = offset + views[0].untyped_storage().nbytes() // views[0].element_size()
    if not places:
        raise CompileError("the steps touch no tensor")
    device = next(iter(touched.tensors.values()))[0].device
    arenas = [
        torch.zeros(size, dtype=dtype, device=device)
        for (dtype, _), size in zip(groups, sizes, strict=True)
    ]
    with torch.no_grad():
        for key, views in touched.tensors.items():
            arena, offset = places[key]
            whole = torch.empty(0, dtype=views[0].dtype, device=device)
            whole.set_(views[0].untyped_storage())
            arenas[arena][offset : offset + whole.numel()].copy_(whole)
            storage = arenas[arena].untyped_storage()
            for view in views:
                view.set_(storage, offset + view.storage_offset(), view.size(), view.stride())
    return arenas


def _lifted(
    body: Body, kind: int, tensors: Sequence[Tensor], arenas: list[Tensor]
) -> fx.GraphModule:
    """One step of `kind` as a functional graph of the arenas: traced with every tensor a
    constant (a view of an arena), each constant replaced by that view of an arena input, its
    writes made copies into the inputs at the end (which inductor makes in place), and its
    matrix products written as sums."""
    from torch.fx.experimental.proxy_tensor import make_fx

    with _undone(tensors), torch.no_grad():
        graph = make_fx(lambda: body(kind))()
    index = {arena.untyped_storage().data_ptr(): i for i, arena in enumerate(arenas)}
    nodes = graph.graph
    with nodes.inserting_before(next(iter(nodes.nodes))):
        inputs = [nodes.placeholder(f"arena{i}") for i in range(len(arenas))]
    targets = set()
    for node in list(nodes.nodes):
        if node.op != "get_attr":
            continue
        targets.add(node.target)
        tensor = getattr(graph, node.target)
        place = index.get(tensor.untyped_storage().data_ptr())
        if place is None:
            raise CompileError("a step touches a tensor that its recording missed")
        with nodes.inserting_after(node):
            view = nodes.call_function(
                torch.ops.aten.as_strided.default,
                (
                    inputs[place],
                    list(tensor.size()),
                    list(tensor.stride()),
                    tensor.storage_offset(),
                ),
            )
        node.replace_all_uses_with(view)
        nodes.erase_node(node)
    for target in targets:
        delattr(graph, target)
    nodes.lint()
    graph.recompile()
    copies = [arena.clone() for arena in arenas]
    functional = make_fx(torch.func.functionalize(graph, remove="mutations"))(*copies)
    return _products_as_sums(functional)


def _products_as_sums(graph: fx.GraphModule) -> fx.GraphModule:
    """`mm(a, b)` as `(a[..., None] * b).sum(1)` (and `addmm` with its bias): a step's products
    have a handful of rows, and as sums inductor fuses them with the operations around them."""
    aten = torch.ops.aten
    nodes = graph.graph
    for node in list(nodes.nodes):
        if node.op != "call_function" or node.target not in (aten.mm.default, aten.addmm.default):
            continue
        if node.kwargs:  # beta or alpha: never in a step
            continue
        bias, a, b = (None, *node.args) if node.target == aten.mm.default else node.args
        with nodes.inserting_before(node):
            column = nodes.call_function(aten.unsqueeze.default, (a, -1))  # (B, R, 1)
            product = nodes.call_function(aten.mul.Tensor, (column, b))  # (B, R, O)
            total = nodes.call_function(aten.sum.dim_IntList, (product, [1]))  # (B, O)
            if bias is not None:
                total = nodes.call_function(aten.add.Tensor, (total, bias))
        node.replace_all_uses_with(total)
        nodes.erase_node(node)
    nodes.lint()
    graph.recompile()
    return graph


def _inductor_options() -> AbstractContextManager[object]:
    import torch._inductor.config

    return torch._inductor.config.patch(_INDUCTOR_OPTIONS)


def _compile(graph: fx.GraphModule, arenas: list[Tensor]) -> Compiled:
    """Inductor's function of `graph`, whose inputs are the arenas."""
    import torch._inductor

    with _inductor_options():
        return torch._inductor.standalone_compile(
            graph, [arena.clone() for arena in arenas], dynamic_shapes="from_example_inputs"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
