"""Steps compiled for the CPU (`models.compiled`): the same numbers as the eager stream, the
same draws as eager generation, and one warning and eager steps where nothing can be compiled.

Compiling takes seconds per kind of step, so these tests compile few, small networks; each
test compiles into a fresh inductor cache (`TORCHINDUCTOR_CACHE_DIR`), kept for the session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_contract import EXACT, make, random_input, run_program, run_steps

from models import CompileError, ResidualSeqUNet, StepProgram
from sequnet_cli import autoregression
from sequnet_cli.autoregression import CHUNK, Autoregression, autoregress, start
from sequnet_cli.config import resolve
from sequnet_cli.tasks.audio import AudioTask


@pytest.fixture(autouse=True)
def _inductor_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    folder = tmp_path_factory.getbasetemp() / "inductor-cache"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(folder))
    torch.set_num_threads(1)
    return folder


# One network of each architecture, two kinds of step compiled where there are two.
@pytest.mark.parametrize(
    ("name", "seed"), [("residual-sequnet", 1), ("sequnet", 2), ("tcn", 0), ("wavenet", 3)]
)
def test_compiled_programs_equal_plain_streams(name: str, seed: int) -> None:
    # float64: the sums of a compiled step run in another order than a BLAS's, so the numbers
    # agree to float64 rounding; every kind that is not compiled runs eagerly in between.
    net, rng = make(name, seed)
    x = random_input(net, rng, shortest=net.receptive_field + 2 * net.clock_cycle)
    split = x.shape[-1] // 3
    plain, compiled = net.stream(x.shape[0]), net.stream(x.shape[0], fixed_index=True)
    plain.prime(x[..., :split])
    compiled.prime(x[..., :split])
    expected = run_steps(plain, x[..., split:])
    torch.testing.assert_close(
        run_program(compiled, x[..., split:], compile_kinds=2), expected, **EXACT
    )


def user_warnings(seen: pytest.WarningsRecorder) -> int:
    """How many warnings were the program's own (not the deprecation warnings torch's compiler
    stack raises on its first import, which depend on what ran before in the process)."""
    return sum(issubclass(record.category, UserWarning) for record in seen)


def audio_network() -> tuple[AudioTask, ResidualSeqUNet]:
    task = AudioTask(resolve("piano-small", None, []))
    torch.manual_seed(0)
    return task, ResidualSeqUNet(task.in_channels, task.out_channels, 4, 3, 1, 3).eval()


def test_compiled_generation_draws_what_eager_generation_draws(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The compiled steps sum in another order than the eager ones: a draw that sits on a
    # boundary could flip to rounding, which these few steps of a small network never meet.
    task, network = audio_network()
    monkeypatch.setattr(autoregression, "COMPILE_MIN_STEPS", 100)
    monkeypatch.setattr(autoregression, "COMPILED_KINDS", 2)
    primer = autoregress(network, task.sampler(network, 1, 1.0, 3), 40, 1)[0]
    eager = Autoregression(network, task.sampler(network, 2, 0.9, 5), 2, primer)
    steps = CHUNK + 30
    compiled = start(
        network, task.sampler(network, 2, 0.9, 5), 2, steps, torch.device("cpu"), primer=primer
    )
    assert compiled.compiled and not eager.compiled
    expected = np.concatenate(list(eager.chunks(steps)), axis=1)
    assert np.array_equal(np.concatenate(list(compiled.chunks(steps)), axis=1), expected)


def test_steps_not_compiled_yet_are_compiled_in_the_background_for_the_next_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first run of a network on this machine generates at once, step by step, and hands
    # a recipe to a background process; the program that recipe rebuilds (an untrained network
    # of the same shapes, the same sampler) compiles the steps the next run loads.
    from sequnet_cli.compiled_steps import Recipe, compiled_folder

    monkeypatch.setattr(autoregression, "COMPILE_MIN_STEPS", 100)
    monkeypatch.setattr(autoregression, "COMPILED_KINDS", 2)
    started: list[Recipe] = []
    monkeypatch.setattr(
        autoregression, "compile_in_background", lambda recipe, folder: started.append(recipe)
    )
    shape = ["model.channels=4", "model.levels=3", "model.depth=1", "model.kernel_size=3"]
    config = resolve("piano-small", None, shape)
    task = AudioTask(config)
    torch.manual_seed(0)
    network = task.build_network().eval()
    recipe = Recipe.of(config, {}, 1, 0.9, 4, None, 1)
    cpu, steps = torch.device("cpu"), 300

    def run() -> tuple[Autoregression, np.ndarray]:
        sampler = task.sampler(network, 1, 0.9, 4)
        generation = start(network, sampler, 1, steps, cpu, recipe=recipe)
        return generation, np.concatenate(list(generation.chunks(steps)), axis=1)

    first, eager = run()
    assert not first.compiled and first.missing == [0, 1] and started == [recipe]
    assert autoregression.compile_recipe(recipe, compiled_folder())
    second, compiled = run()
    assert second.compiled and started == [recipe]  # loaded, nothing left to compile
    assert np.array_equal(compiled, eager)


def test_short_or_slow_requests_generate_step_by_step() -> None:
    task, network = audio_network()
    cpu = torch.device("cpu")
    short = start(network, task.sampler(network, 1, 1.0, 0), 1, 10, cpu)
    assert not short.compiled and not short.captured
    # (conftest: COMPILE_MIN_STEPS is out of reach in tests unless a test lowers it)
    assert not start(network, task.sampler(network, 1, 1.0, 0), 1, 10**6, cpu, fast=False).compiled


def test_an_unwritable_user_folder_generates_step_by_step(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Compiled steps are kept in the user data folder; where it cannot be made, a shipped demo
    # still plays: generation says so once and runs step by step.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SEQUNET_HOME", str(blocker / "home"))  # can never be made
    monkeypatch.setattr(autoregression, "COMPILE_MIN_STEPS", 100)
    task, network = audio_network()
    with pytest.warns(UserWarning, match="generating step by step") as seen:
        generation = start(network, task.sampler(network, 1, 1.0, 0), 1, 300, torch.device("cpu"))
    assert user_warnings(seen) == 1 and not generation.compiled and not generation.missing


@pytest.fixture
def no_compiler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine without a C++ compiler: a fresh cache (nothing to load) and a compiler that
    does not exist; one step kind compiled, so that failing is quick."""
    import torch._inductor.config as inductor

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(inductor.cpp, "cxx", (None, str(tmp_path / "no-such-compiler")))
    monkeypatch.setattr(autoregression, "COMPILED_KINDS", 1)


@pytest.mark.usefixtures("no_compiler")
def test_without_a_compiler_one_warning_then_eager_steps() -> None:
    # Generation says so once and draws what eager generation draws.
    task, network = audio_network()
    expected = autoregress(network, task.sampler(network, 1, 1.0, 2), 300, 1)
    with pytest.warns(UserWarning, match="could not compile the generation step") as seen:
        generation = Autoregression(network, task.sampler(network, 1, 1.0, 2), 1, compile=True)
    assert user_warnings(seen) == 1 and not generation.compiled
    assert np.array_equal(np.concatenate(list(generation.chunks(300)), axis=1), expected)


@pytest.mark.usefixtures("no_compiler")
def test_a_failed_background_compilation_is_not_tried_again_at_every_run() -> None:
    from sequnet_cli.compiled_steps import Recipe, compiled_folder, may_compile_in_background

    shape = ["model.channels=4", "model.levels=2", "model.depth=1", "model.kernel_size=3"]
    recipe = Recipe.of(resolve("piano-small", None, shape), {}, 1, 0.9, 4, None, 1)
    folder = compiled_folder()
    assert may_compile_in_background(folder)
    with pytest.warns(UserWarning, match="could not compile"):
        assert not autoregression.compile_recipe(recipe, folder)
    assert not may_compile_in_background(folder)


def test_compiling_needs_a_fixed_index_stream() -> None:
    net, _ = make("residual-sequnet", 0)
    x = torch.zeros(1, net.in_channels, dtype=torch.float64)
    with pytest.raises(Exception, match="fixed-index"):
        StepProgram(net.stream(1), x, lambda output: None, compile_kinds=1)
    assert issubclass(CompileError, RuntimeError)
