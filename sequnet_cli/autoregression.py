"""The generation loop: a network's stream and its task's sampler, one step and one draw at a time.

Each step feeds the latest element (the primer's last, or the task's first input) to the stream,
and the sampler draws the next element from the output; its encoding is the next step's input.
The loop is a `models.StepProgram`: with `capture` (on CUDA) its step and draw are replayed as
CUDA graphs; with `compile` (on a CPU) the most frequent kinds of step, the draw included, run as
functions compiled by inductor (`models.compiled`), the others eagerly; otherwise everything runs
eagerly through the same code. A capture or compilation that fails falls back to eager steps
with one warning. The sampler's random numbers are drawn in blocks of `CHUNK`
steps, before each chunk, so the same seed gives the same elements however the steps run, and
a captured step finds its numbers at a position held on the device. The caller gets the drawn
elements chunk by chunk, as they come (for the display, live playback, and the files).
"""

from __future__ import annotations

import fcntl
import gc
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models import CausalNetwork, CompileError, StepProgram, Stream
from models.compiled import Store
from sequnet_cli.compiled_steps import (
    FAILED_FILE,
    CompiledSteps,
    Recipe,
    compile_in_background,
    compiled_folder,
    may_compile_in_background,
)
from sequnet_cli.console import print_note, waiting
from sequnet_cli.devices import cpu_threads
from sequnet_cli.errors import WriteError, warn
from sequnet_cli.tasks import Progress, Sampler

CHUNK = 1024  # steps per chunk handed to the caller, and per block of random numbers
# Kinds of step compiled, the most frequent first: kind k is one step in 2**(k + 1), so seven
# kinds are 99.2% of the steps. An eager step of a deep kind costs as much as ten compiled
# steps (measured on a 10-level Seq-U-Net: 0.4-0.6 ms against 20-80 us), so with five kinds
# the eager 3% took a third of the time; each further kind compiles for longer (it holds more
# levels) and saves less.
COMPILED_KINDS = 7
# Fewer steps than this (in all sequences together) run eagerly on a CPU: loading compiled steps
# from the cache takes a second or two, which about 16,000 eager steps of a demo-sized network
# also take.
COMPILE_MIN_STEPS = 16_384
COMPILE_NOTE_SECONDS = 5.0  # a compilation this long is worth telling the user about


class Autoregression:
    """`count` sequences generated together by `network` and `sampler`, continuing `primer`
    (in the task's storage form; the primer itself is not returned). `capture`: replay the
    steps as CUDA graphs; `fixed_index`: run what would be captured without capturing it (the
    same elements, as tests check on a CPU). `compile`: compile the steps for the CPU, equal to
    eager ones to float rounding (a `Store`: also keep them there, or load them from it);
    `stored_only`: compile nothing, run what the store holds compiled and the other kinds
    eagerly (`missing` lists them). `threads`: CPU threads for the steps (one is the fastest
    for the small operations of a step; 0 leaves PyTorch's setting)."""

    def __init__(
        self,
        network: CausalNetwork,
        sampler: Sampler,
        count: int,
        primer: np.ndarray | None = None,
        capture: bool = False,
        fixed_index: bool = False,
        threads: int = 1,
        compile: bool | Store = False,
        stored_only: bool = False,
    ) -> None:
        self.network, self.sampler, self.count = network, sampler, count
        self.fixed_index, self.threads = fixed_index, threads
        device = sampler.device
        self.randoms = torch.zeros(CHUNK, count, *sampler.random_shape, device=device)
        self._random = torch.zeros(1, count, *sampler.random_shape, device=device)
        self._random_row = self._random[0]  # (B, ...): this step's random numbers
        self.drawn = torch.zeros(  # (CHUNK, B, ...)
            CHUNK, count, *sampler.value_shape, dtype=sampler.value_dtype, device=device
        )
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # the step in the chunk
        self.stored_only = stored_only
        with cpu_threads(threads):  # the threads the steps run with, which compiling bakes in
            self.program = self._start(primer, capture, compile)

    @property
    def captured(self) -> bool:
        """Whether the steps replay CUDA graphs."""
        return self.program.captured

    @property
    def compiled(self) -> bool:
        """Whether the frequent steps run compiled."""
        compiled = self.program.compiled
        return compiled is not None and not compiled.missing

    @property
    def missing(self) -> list[int]:
        """Kinds of step to compile that were not compiled yet (`stored_only`)."""
        compiled = self.program.compiled
        return compiled.missing if compiled is not None else []

    def _start(
        self, primer: np.ndarray | None, capture: bool, compile: bool | Store
    ) -> StepProgram:
        if capture or compile:
            try:
                return self._program(primer, capture, compile)
            except CompileError as error:
                warn(f"could not compile the generation step ({error}); generating step by step")
            except RuntimeError as error:  # CUDA reports a failed capture so
                warn(
                    f"could not capture the generation step as CUDA graphs ({_first_line(error)}); "
                    "generating step by step instead"
                )
        return self._program(primer, capture=False, compile=False)

    def _program(
        self, primer: np.ndarray | None, capture: bool, compile: bool | Store
    ) -> StepProgram:
        fixed_index = capture or compile is not False or self.fixed_index
        stream = self.network.stream(self.count, fixed_index=fixed_index)
        self.x = self._first_input(stream, primer)  # (B, in_channels): each step's input
        return StepProgram(
            stream,
            self.x,
            self._after,
            capture=capture,
            compile_kinds=COMPILED_KINDS if compile else 0,
            state=[self.position],
            store=compile if not isinstance(compile, bool) else None,
            stored_only=self.stored_only,
        )

    def _first_input(self, stream: Stream, primer: np.ndarray | None) -> Tensor:
        """The first step's input `(B, in_channels)`, after priming the stream with all of the
        primer but its last element (which is that input)."""
        if primer is None or len(primer) == 0:
            return self.sampler.first_input().clone()
        context = self.sampler.encode(primer).expand(self.count, -1, -1)  # (B, C, P)
        if context.shape[-1] > 1:
            stream.prime(context[..., :-1].contiguous())
        return context[..., -1].clone()

    def _after(self, output: Tensor) -> None:
        """Draw from one step's output `(B, out_channels)`, keep the element, feed it back."""
        torch.index_select(self.randoms, 0, self.position, out=self._random)
        values, next_input = self.sampler.draw(output, self._random_row)
        self.drawn.index_copy_(0, self.position, values.unsqueeze(0))
        self.x.copy_(next_input)
        self.position.add_(1)

    def chunks(self, steps: int) -> Iterator[np.ndarray]:
        """The elements of the next `steps` steps, `(count, n, ...)` per chunk of at most `CHUNK`
        steps, as they are drawn. On Ctrl-C the steps completed so far come as one last, shorter
        chunk before the `KeyboardInterrupt` goes on."""
        done = 0
        while done < steps:
            size = min(CHUNK, steps - done)
            completed = 0
            try:
                with cpu_threads(self.threads), torch.inference_mode(), _no_garbage_collection():
                    self.sampler.fill_random(self.randoms)
                    self.position.zero_()
                    for _ in range(size):
                        self.program.run()
                        completed += 1
            except KeyboardInterrupt:
                if completed:
                    yield self._take(completed)
                raise
            yield self._take(size)
            done += size

    def _take(self, steps: int) -> np.ndarray:
        """The first `steps` elements of the chunk, `(count, steps, ...)`, copied to the host."""
        return self.drawn[:steps].transpose(0, 1).to("cpu", copy=True).numpy()


def start(
    network: CausalNetwork,
    sampler: Sampler,
    count: int,
    steps: int,
    device: torch.device,
    *,
    primer: np.ndarray | None = None,
    fast: bool = True,
    threads: int = 1,
    recipe: Recipe | None = None,
) -> Autoregression:
    """The generation loop for `count` sequences of `steps` elements, as fast as `device` allows
    unless `fast` is off: CUDA graphs on a GPU; on a CPU, compiled steps when there are enough
    steps to repay loading them. The first time a network of this shape generates on this
    machine they must be compiled, which takes a minute or more: given the `recipe` that
    rebuilds this program, generation starts at once, step by step, and a background process
    compiles them for the runs that follow (`sequnet_cli.compiled_steps`); without one, they are
    compiled here, before the first step. Where compiled steps cannot be kept (an unwritable
    user data folder), it generates step by step."""
    capture = fast and device.type == "cuda"
    compile = fast and device.type == "cpu" and steps * count >= COMPILE_MIN_STEPS
    folder = _compiled_folder() if compile else None
    if folder is None:
        return Autoregression(network, sampler, count, primer, capture, threads=threads)
    started = time.monotonic()
    with waiting("preparing the compiled generation step"):
        generation = Autoregression(
            network,
            sampler,
            count,
            primer,
            threads=threads,
            compile=CompiledSteps(folder),
            stored_only=recipe is not None,
        )
    seconds = time.monotonic() - started
    if generation.missing and recipe is not None and may_compile_in_background(folder):
        compile_in_background(recipe, folder)
        print_note(
            "generating step by step: the compiled generation step of this network is being "
            "made for this CPU in the background (a minute or more, once), for the runs that "
            "follow"
        )
    elif generation.compiled and seconds > COMPILE_NOTE_SECONDS:
        print_note(
            f"compiled the generation step for this CPU in {seconds:.0f} s; later runs of "
            "networks of this shape load it in seconds"
        )
    return generation


def _compiled_folder() -> Path | None:
    """Where compiled steps are kept; None, with one warning, where the user data folder cannot
    be written (a shipped demo still plays there, step by step)."""
    try:
        return compiled_folder()
    except WriteError as error:
        warn(f"compiled generation steps cannot be kept ({error}); generating step by step")
        return None


@contextmanager
def _no_garbage_collection() -> Iterator[None]:
    """Python's cycle collector paused: a step allocates many short-lived objects and no
    cycles, and each collection walks every object of PyTorch (about 5% of a compiled step)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no reason"


def autoregress(
    network: CausalNetwork,
    sampler: Sampler,
    steps: int,
    count: int,
    primer: np.ndarray | None = None,
    capture: bool = False,
    progress: Progress | None = None,
    threads: int = 1,
    compile: bool = False,
) -> np.ndarray:
    """`count` sequences of `steps` new elements each, drawn by `sampler`: `(count, steps, ...)`."""
    generation = Autoregression(
        network, sampler, count, primer, capture, threads=threads, compile=compile
    )
    return collect(generation, steps, progress)


def collect(generation: Autoregression, steps: int, progress: Progress | None = None) -> np.ndarray:
    """The next `steps` elements of every sequence, `(count, steps, ...)`; `progress` is told
    the steps of each chunk as it comes."""
    chunks = []
    for chunk in generation.chunks(steps):
        chunks.append(chunk)
        if progress is not None:
            progress(chunk.shape[1])
    return np.concatenate(chunks, axis=1)


def compile_child() -> None:
    """The background process of `compile_in_background`: a recipe and a folder as JSON on
    stdin (`compile_recipe`)."""
    request = json.loads(sys.stdin.read())
    compile_recipe(Recipe(**request["recipe"]), Path(request["folder"]))


def compile_recipe(recipe: Recipe, folder: Path) -> bool:
    """Compile the steps of the generation `recipe` rebuilds into `folder` (`CompiledSteps`),
    unless another process holds the folder's lock (it compiles them already): whether this one
    did. The network is built untrained: its shapes are what is compiled, not its weights."""
    from sequnet_cli.config import RunConfig
    from sequnet_cli.tasks import task_for

    with (folder / "compiling.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        task = task_for(RunConfig.from_dict(recipe.config), recipe.profile)
        network = task.build_network().eval()
        sampler = task.sampler(
            network, recipe.count, recipe.temperature, recipe.seed, recipe.voices
        )
        generation = Autoregression(
            network, sampler, recipe.count, threads=recipe.threads, compile=CompiledSteps(folder)
        )
        failed = folder / FAILED_FILE
        if generation.compiled:
            failed.unlink(missing_ok=True)
        else:  # the reason is in the log, where the warning went
            failed.touch()
        return generation.compiled
