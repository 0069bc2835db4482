"""The `sequnet` Typer application: thin commands that hand off to library code.

Every `SequnetError` (and Ctrl-C, out-of-memory, unreadable files) raised below a command is
turned into exactly one `error: ...` line on stderr and exit code 1 by `main`; every
`SequnetWarning` into one `warning: ...` line. SIGTERM is taken as Ctrl-C is
(`sequnet_cli.interrupts`). Commands import what they need when they run,
so `sequnet --help` and `sequnet --version` never import torch.

The module is long only because every command declares its options here, typed and with help
text, as Typer wants; each command's body is a few lines that hand off.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from sequnet_cli import __version__
from sequnet_cli.console import console, error_console, print_error, print_warning
from sequnet_cli.errors import ConfigError, SequnetError, SequnetWarning
from sequnet_cli.interrupts import sigterm_as_ctrl_c

if TYPE_CHECKING:
    from sequnet_cli.bench.results import BenchResult

app = typer.Typer(
    name="sequnet",
    help="Train, evaluate, sample and benchmark Seq-U-Net music models (piano roll and raw audio).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _show_version(value: bool) -> None:
    if value:
        console.print(f"sequnet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """sequnet: causal U-Nets for music generation (Stoller et al., IJCAI 2020)."""


PresetArgument = Annotated[
    str, typer.Argument(help="A preset name (see `sequnet presets`) or a preset TOML file.")
]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model variant of the preset, e.g. sequnet, tcn, wavenet."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a setting, e.g. --set train.lr=1e-3 (repeatable)."),
]
DeviceOption = Annotated[
    str | None,
    typer.Option("--device", help="auto, cpu or cuda (default: $SEQUNET_DEVICE or auto)."),
]
DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data", help="Your own data: a folder of MIDI or audio files (or a .mat/.pickle)."
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder holding benchmark files (e.g. JSB_Chorales.mat); also $SEQUNET_DATA_DIR.",
    ),
]


@app.command()
def train(
    preset: Annotated[
        str | None, typer.Argument(help="A preset name or TOML file (not needed with --resume).")
    ] = None,
    model: ModelOption = None,
    set_: SetOption = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Stop when the run has trained this many epochs in all, a resumed run's "
            "earlier ones included; kept by the run (default: the preset's)."
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="Stop when the run has taken this many optimizer steps in all, a resumed "
            "run's earlier ones included; kept by the run (default: the preset's, if any)."
        ),
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option(
            help="Stop after this many minutes of training by this command; not kept: a "
            "later --resume without it trains on to the run's epochs and steps."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (same seed, same result on a CPU).")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="CPU threads (default: the preset's, else all cores but one).", min=1),
    ] = None,
    device: DeviceOption = None,
    data: DataOption = None,
    data_dir: DataDirOption = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue a stopped run (its name, folder, or preset).")
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Train in this many processes on this machine (one per GPU, or CPU ranks), "
            "through torchrun; each takes train.batch_size examples per step.",
        ),
    ] = None,
) -> None:
    """Train a model of a preset; the best checkpoint is kept in the run folder."""
    from sequnet_cli import config as configs
    from sequnet_cli import distributed, launcher, training
    from sequnet_cli.devices import resolve_device
    from sequnet_cli.limits import Limits, check_options

    distributed.quiet_unless_first()  # under torchrun, rank 0 alone speaks
    launcher.check_processes(nproc)
    check_options({"epochs": epochs, "steps": steps, "minutes": minutes})
    overrides = list(set_ or [])
    # Epochs and steps are the run's (its settings, counted in all); minutes this command's.
    for key, value in (("epochs", epochs), ("steps", steps), ("seed", seed), ("threads", threads)):
        if value is not None:
            overrides.append(f"train.{key}={value}")
    if data is not None:  # recorded in the run, so evaluate and sample find the same data
        overrides.append(f"data.dataset={data.expanduser().resolve()}")
    target = resolve_device(device)
    if resume is not None:
        run = training.resumed_run(resume, model, overrides)
        config = run.config
    elif preset is None:
        raise ConfigError("name a preset to train (see `sequnet presets`), or --resume a run")
    else:
        run, config = None, configs.resolve(preset, model, overrides)
    limits = Limits.of(config.train, epochs, steps, minutes)
    if run is not None:
        if not distributed.launched():  # under torchrun, rank 0 takes the lock for all ranks
            run.lock.check_free()
        limits.check_left(run.name, run.load_state("last", mmap=True)["training"])
    if nproc is not None and nproc > 1:
        found = str(run.path) if run is not None else None  # the ranks resume this very run
        arguments = launcher.rank_arguments(
            preset, model, overrides, device, data_dir, found, minutes
        )
        code = launcher.launch(nproc, arguments, target)
        if code:
            raise typer.Exit(code)
        return
    train_run = distributed.train_run if distributed.launched() else training.train_run
    run, state = train_run(config, limits, target, None, data_dir, run)
    console.print(
        f"run {run.name}: {state.progress()}; {state.best()}; checkpoints in {run.path}",
        soft_wrap=True,
    )


@app.command()
def tune(
    preset: PresetArgument,
    model: ModelOption = None,
    trials: Annotated[
        int | None,
        typer.Option(min=1, help="Finished trials the study should hold (a rerun continues it)."),
    ] = None,
    minutes_per_trial: Annotated[
        float | None,
        typer.Option(
            help="Stop each trial after this many minutes (default: the preset's limits)."
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna RDB URL of the study, e.g. postgresql://user:password@host/db, shared by "
            "machines (default: SQLite in the user data dir)."
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option(min=1, help="Trials at once on this machine, sharing its CPU threads.")
    ] = 1,
    study: Annotated[
        str | None, typer.Option(help="Name of the study (default: PRESET-MODEL).")
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Print the study's leaderboard; run no trial.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Where to write the best trial's preset (default: beside the study).",
        ),
    ] = None,
    set_: SetOption = None,
    device: DeviceOption = None,
    data: DataOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Search a preset's hyper-parameters (its tune tables) with Optuna's TPE; each trial is a run."""
    from sequnet_cli import tuning
    from sequnet_cli.console import print_study

    overrides = list(set_ or [])
    if data is not None:  # recorded in the runs, so evaluate and sample find the same data
        overrides.append(f"data.dataset={data.expanduser().resolve()}")
    if trials is None and not show:
        raise ConfigError("say how many trials the study should hold with --trials N (or --show)")
    plan = tuning.plan_study(
        preset,
        model,
        overrides,
        trials=trials or 0,
        minutes_per_trial=minutes_per_trial or 0.0,
        storage=storage,
        jobs=jobs,
        study=study,
        device=device,
        data_dir=data_dir,
        out=out,
    )
    if not show:
        tuning.run_study(plan)
    report = tuning.study_report(plan)
    print_study(report.rows, report.columns, report.metric, report.title, report.caption)
    if report.best_preset is not None:
        console.print(
            f"best preset: {report.best_preset}; train it with "
            f"`sequnet train {report.best_preset}`",
            soft_wrap=True,
        )


@app.command("runs")
def list_runs_command(
    ref: Annotated[
        str | None,
        typer.Argument(help="Only this run (a name or folder), or the runs of this preset."),
    ] = None,
    model: ModelOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of a table.")
    ] = False,
    history: Annotated[
        bool,
        typer.Option(
            "--history",
            help="Print the training history of the run (of a preset: its newest) as CSV: "
            "one row per validation.",
        ),
    ] = False,
) -> None:
    """List training runs and their checkpoints, newest first, and the shipped demo models."""
    from sequnet_cli import checkpoints
    from sequnet_cli.console import print_csv, print_json, print_runs
    from sequnet_cli.demos import list_demos
    from sequnet_cli.paths import runs_dir

    if history:
        if ref is None:
            raise ConfigError("--history needs a run: `sequnet runs RUN --history`")
        print_csv(checkpoints.find_run(ref, model).history())
        return
    folder = runs_dir()
    runs = checkpoints.matching_runs(checkpoints.list_runs(), ref, model)
    demos = checkpoints.matching_runs([demo.summary() for demo in list_demos()], ref, model)
    chosen, start = "", "sequnet train jsb"
    if ref is not None and not any(run.name == ref for run in runs):
        checkpoints.check_preset_or_run(ref)
        chosen, start = f"of {ref} ", f"sequnet train {ref}"
    if json_output:
        print_json([summary.to_json() for summary in [*runs, *demos]])
    else:
        print_runs(runs, folder, demos, chosen, start)


@app.command()
def presets() -> None:
    """List the presets shipped with sequnet."""
    from sequnet_cli import config as configs
    from sequnet_cli.console import print_presets

    print_presets([configs.load_preset(name) for name in configs.list_presets()])


RunArgument = Annotated[
    str,
    typer.Argument(
        help="A preset (its newest run), a run name or folder, or a .pt checkpoint file."
    ),
]
NoCaptureOption = Annotated[
    bool,
    typer.Option(
        "--no-capture",
        help="Run generation step by step: no CUDA graphs on a GPU, no compiled steps on a CPU.",
    ),
]
VoicesOption = Annotated[
    str | None,
    typer.Option(
        help="Piano roll: voices per frame: data (drawn from the training frames' counts, the "
        "default), free (every pitch drawn independently), or a number N.",
    ),
]
WhichOption = Annotated[
    Literal["best", "last"],
    typer.Option("--checkpoint", help="Which checkpoint of the run: best or last."),
]


@app.command()
def evaluate(
    ref: RunArgument,
    model: ModelOption = None,
    checkpoint: WhichOption = "best",
    split: Annotated[list[str] | None, typer.Option(help="Splits to score (default: all).")] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
    device: DeviceOption = None,
    data: DataOption = None,
    data_dir: DataDirOption = None,
    generation: Annotated[
        bool,
        typer.Option(
            "--generation",
            help="Instead: generate clips and compare them with the test data over time "
            "(stability of long generations, paper §5.2).",
        ),
    ] = False,
    seconds: Annotated[float, typer.Option(help="--generation: length of each clip.")] = 10.0,
    count: Annotated[int, typer.Option("-n", "--count", help="--generation: clips.")] = 4,
    temperature: Annotated[
        float | None,
        typer.Option(
            help="--generation: divide the logits by this (default: the task's: 0.95 for "
            "audio, the paper's, and 1.0 for piano rolls)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="--generation: random seed.")] = 0,
    voices: VoicesOption = None,
    no_capture: NoCaptureOption = False,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Score only the fixed excerpts validation scores (audio: a few seconds of "
            "each split, an estimate) instead of every element of each split.",
        ),
    ] = False,
) -> None:
    """Score a trained model on whole splits: frame-wise NLL (piano roll) or bits per audio
    sample, saying how much it scored; or, with --generation, how generated clips drift from
    the data over time."""
    from sequnet_cli.devices import resolve_device
    from sequnet_cli.trained_model import load_model

    if voices is not None and not generation:
        raise ConfigError("--voices shapes generated clips; use it with --generation")
    target = resolve_device(device)
    if generation:
        from sequnet_cli.console import print_stability
        from sequnet_cli.stability import StabilityRequest, stability_report

        request = StabilityRequest(
            seconds, count, temperature, seed, capture=not no_capture, voices=voices
        )
        request.check()
        trained = load_model(ref, model, checkpoint, target)
        print_stability(stability_report(trained, request, target, data, data_dir), json_output)
        return
    from sequnet_cli.console import print_scores
    from sequnet_cli.data import SPLITS
    from sequnet_cli.evaluation import evaluate_model, scores_document

    splits = list(split or SPLITS)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ConfigError(f"unknown split '{unknown[0]}'; use {', '.join(SPLITS)}")
    trained = load_model(ref, model, checkpoint, target)
    scores = evaluate_model(trained, splits, target, data, data_dir, whole=not quick)
    document = scores_document(trained, scores, not quick) if json_output else None
    what = "validation's fixed sample" if quick else "whole splits"
    print_scores(trained.header(), trained.task.metric_title, scores, what, document)


@app.command("export-demo", hidden=True)
def export_demo_command(
    ref: RunArgument,
    command: Annotated[
        str, typer.Option(help="The command that trained the run, recorded with the demo.")
    ],
    data_name: Annotated[
        str, typer.Option(help="A short name of the data it was trained on, recorded with it.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Folder to write <preset>.pt into (default: the package's demos)."),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Store a run's best checkpoint as the shipped demo of its preset (scripts/make_demos.sh)."""
    import torch

    from sequnet_cli.checkpoints import find_run
    from sequnet_cli.demos import export_demo
    from sequnet_cli.evaluation import evaluate_model
    from sequnet_cli.trained_model import load_model

    cpu = torch.device("cpu")
    trained = load_model(str(find_run(ref).path), None, "best", cpu)  # a run, never a demo
    scored = evaluate_model(trained, ["valid", "test"], cpu, None, data_dir)
    scores = {score.split: score.value for score in scored}
    metric = trained.task.metric_title
    path = export_demo(trained.source, command, data_name, scores, metric, out)
    console.print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB; {scores})")


@app.command()
def sample(
    ref: RunArgument,
    model: ModelOption = None,
    checkpoint: WhichOption = "best",
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            help="Output file, or a folder for several (a name ending in / is a folder).",
        ),
    ] = None,
    count: Annotated[
        int, typer.Option("-n", "--count", help="How many outputs, generated as one batch.")
    ] = 1,
    steps: Annotated[
        int | None, typer.Option(help="Length in frames (piano roll) or samples (audio).")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Length in seconds (instead of --steps).")
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            help="Divide the logits by this (default: the task's: 0.95 for audio, as the paper "
            "samples, and 1.0 for piano rolls)."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed gives the same output.")
    ] = 0,
    primer: Annotated[
        Path | None, typer.Option(help="Continue this MIDI (piano roll) or audio file.")
    ] = None,
    no_primer_in_output: Annotated[
        bool,
        typer.Option("--no-primer-in-output", help="Write only the continuation, not the primer."),
    ] = False,
    tempo: Annotated[
        float | None,
        typer.Option(
            help="Piano roll: tempo of the written MIDI in beats per minute (default: the "
            "primer's, else the training files', else 120).",
        ),
    ] = None,
    program: Annotated[
        int | None,
        typer.Option(
            help="Piano roll: General MIDI program (0 = acoustic grand piano) [default: 0]."
        ),
    ] = None,
    voices: VoicesOption = None,
    play: Annotated[
        bool,
        typer.Option(
            "--play",
            help="Audio: play the result, while it is generated when that keeps ahead of "
            "playback (one output), else after the file is written.",
        ),
    ] = False,
    device: DeviceOption = None,
    no_capture: NoCaptureOption = False,
    threads: Annotated[
        int, typer.Option(min=1, help="CPU threads for generation (one is the fastest for few -n).")
    ] = 1,
) -> None:
    """Generate music with a trained model through its stream; writes MIDI or WAV."""
    from sequnet_cli.devices import resolve_device
    from sequnet_cli.generation import SampleRequest, generate

    asked = {"tempo": tempo, "program": program}  # options that only some models use
    request = SampleRequest(
        out=Path(out) if out is not None else None,
        out_folder=out is not None and out.endswith(("/", os.sep)),
        count=count,
        steps=steps,
        seconds=seconds,
        temperature=temperature,
        seed=seed,
        primer=primer,
        keep_primer=not no_primer_in_output,
        tempo=tempo,
        program=program if program is not None else 0,
        voices=voices,
        asked=frozenset(name for name, value in asked.items() if value is not None),
        play=play,
        capture=not no_capture,
        threads=threads,
    )
    target = resolve_device(device)
    generate(ref, model, checkpoint, request, target)


@app.command()
def bench(
    preset: Annotated[
        str, typer.Option(help="Preset to benchmark (e.g. piano, jsb) or a TOML file.")
    ] = "piano",
    vs: Annotated[
        str | None,
        typer.Option(
            help="Baseline model of the preset (default: its other model, e.g. wavenet or tcn)."
        ),
    ] = None,
    device: DeviceOption = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Batch for training and batched generation "
            "(default: 2 for audio, as in Table 1; else the preset's).",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="CPU threads for every measurement "
            "(default: all for training, 1 for batch-1 generation).",
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of tables.")
    ] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="Reduced sizes that run on a CPU in minutes.")
    ] = False,
    sweep: Annotated[
        bool, typer.Option("--sweep/--no-sweep", help="Also measure cost against depth.")
    ] = True,
    no_capture: Annotated[
        bool,
        typer.Option("--no-capture", help="CUDA: measure generation without CUDA graphs only."),
    ] = False,
    repeat: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Timed rounds: training steps of each model in turn, and at least as many "
            "chunks of generation steps; medians are reported (default: 5, --quick 3).",
        ),
    ] = None,
) -> None:
    """Benchmark a preset's Seq-U-Net against its baseline: training cost and generation speed.

    Prints the plan and its estimated time first, then shows the results as they come; Ctrl-C
    prints (or, with --json, writes) what was measured so far."""
    from sequnet_cli.bench import BenchRequest, BenchRun
    from sequnet_cli.bench.render import live_view, plan_line, stage_line
    from sequnet_cli.console import LiveView, print_note
    from sequnet_cli.errors import StoppedError

    run = BenchRun(
        BenchRequest(
            preset,
            vs,
            device,
            batch_size,
            threads,
            quick,
            sweep,
            capture=not no_capture,
            repeat=repeat,
        )
    )
    with error_console.status("calibrating") as status:
        run.estimate(progress=status.update)
    print_note(plan_line(run))
    try:
        with LiveView(lambda: live_view(run)) as view:
            run.measure(lambda index, finished: view.note(stage_line(run, index, finished)))
    except KeyboardInterrupt:
        result = run.result()
        _show_bench(result, json_output)
        raise StoppedError(
            f"interrupted after {result.stages_done} of {len(result.stages)} stages; "
            f"{'the document above holds' if json_output else 'the table above shows'} them"
        ) from None
    _show_bench(run.result(), json_output)


def _show_bench(result: BenchResult, json_output: bool) -> None:
    """A bench result (whole or partial) as tables, or as one JSON document."""
    import json

    from rich.console import Group

    from sequnet_cli.bench import render_bench

    if json_output:
        document = json.dumps(result.to_json(), indent=2)
        console.print(document, markup=False, emoji=False, soft_wrap=True)
    else:
        console.print(Group(*render_bench(result)))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning user-caused failures into one line."""
    with warnings.catch_warnings(), sigterm_as_ctrl_c():
        warnings.simplefilter("always", SequnetWarning)
        warnings.showwarning = _show_warning(warnings.showwarning)
        _run(argv)


def _show_warning(fallback: Any) -> Any:
    """A `warnings.showwarning` that prints sequnet's warnings as one line each."""

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, SequnetWarning):
            print_warning(str(message))
        else:
            fallback(message, category, *args, **kwargs)

    return show


def _run(argv: list[str] | None) -> None:
    try:
        code = app(args=argv, prog_name="sequnet", standalone_mode=False)
    except SequnetError as error:
        print_error(str(error))
        sys.exit(1)
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(1)
    except (MemoryError, RuntimeError) as error:
        # torch reports a failed allocation as a RuntimeError (torch.OutOfMemoryError on CUDA,
        # "can't allocate memory" on the CPU); any other RuntimeError is a bug.
        if not isinstance(error, MemoryError) and not _out_of_memory(error):
            raise
        print_error(
            "out of memory; use a smaller batch (--set train.batch_size=N), a smaller model, "
            "or a shorter sample"
        )
        sys.exit(1)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        print_error("aborted")
        sys.exit(1)
    except Exception as error:
        # Typer's (vendored) click signals usage problems with exceptions that format
        # themselves; anything else is a bug and keeps its traceback.
        format_message = getattr(error, "format_message", None)
        if format_message is None:
            raise
        if type(error).__name__ == "NoArgsIsHelpError":
            sys.exit(0)
        print_error(format_message())
        sys.exit(1)
    if code == INTERRUPTED:  # Typer turns Ctrl-C into this exit code instead of raising
        print_error("interrupted")
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


def _out_of_memory(error: RuntimeError) -> bool:
    """Whether torch raised `error` because an allocation failed (CPU or GPU)."""
    text = str(error)
    return type(error).__name__ == "OutOfMemoryError" or any(
        phrase in text for phrase in ("out of memory", "can't allocate memory", "not enough memory")
    )


if __name__ == "__main__":
    main()
