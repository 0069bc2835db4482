"""The piano-roll task: 88 binary pitches per frame (DESIGN.md, "Tasks").

Input per step: the 88 pitches of a frame (MIDI 21-108); output: 88 logits, one independent
Bernoulli per pitch for the next frame. The loss is the binary cross-entropy summed over
pitches and averaged over predicted frames; the metric is the frame-wise negative
log-likelihood in nats: per piece, frames 1..T-1 are predicted from 0..T-2, the total over a
split is divided by the number of predicted frames (Boulanger-Lewandowski 2012, TCN and the
paper). Batches are padded at the end: causal networks never see the padding of earlier frames
and a mask keeps it out of the loss and the metric.

Data: a benchmark key (`jsb`, `nottingham`, `musedata`, `piano-midi`), a `.mat` or
Boulanger-Lewandowski `.pickle` file, or a folder of MIDI files. Samples are written as MIDI,
at the tempo asked for, else the primer's, else the training files' typical tempo (MIDI
folders), else 120 beats per minute (the released rolls, which have no tempo).

Sampling keeps the data's polyphony unless told otherwise (`--voices`): each frame's number of
voices is drawn from the training frames' (stored with the run), then that many pitches from the
model's Bernoullis conditioned on their sum (`sequnet_cli.tasks.voices`). The model, its loss
and its NLL are the paper's; only the draw changes. `--voices free` draws every pitch
independently, `--voices N` exactly N per frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models import CausalNetwork, build_network
from sequnet_cli.config import DataConfig, RunConfig
from sequnet_cli.data.midi import (
    load_midi_folder,
    midi_tempo,
    midi_to_roll,
    read_midi,
    roll_to_midi,
    write_midi,
)
from sequnet_cli.data.polyphonic import BENCHMARKS, load_benchmark, load_mat, load_pickle
from sequnet_cli.data.rolls import PITCHES, PianoRollSplits, voice_counts
from sequnet_cli.errors import ConfigError, DataError, warn
from sequnet_cli.tasks import (
    DEFAULT_TEMPO,
    WHOLE,
    Batch,
    BenchShape,
    FileProgress,
    Shard,
    TaskData,
)
from sequnet_cli.tasks.voices import ConditionalBernoulli, VoiceCounts

if TYPE_CHECKING:
    from sequnet_cli.generation import SampleRequest

EVAL_BATCH = 16  # pieces per evaluation pass, at least
DEFAULT_FRAMES = 128  # generated when neither --steps nor --seconds is given
RELEASED_SUFFIXES = (".mat", ".pickle", ".pkl")
RELEASED_FRAMES_PER_BEAT = 2  # how the released benchmark rolls are played back


class PianoRollTask:
    """Frame-by-frame piano rolls; see the module docstring."""

    name = "piano-roll"
    metric = "NLL"
    metric_title = "NLL (nats/frame)"
    unit = "frames"
    output_suffixes = (".mid", ".midi")
    sample_options = frozenset({"tempo", "program"})  # of the written MIDI
    generated_bytes = 1024  # the roll, its copies while writing, and the MIDI notes
    default_temperature = 1.0  # the model's own probabilities
    in_channels = out_channels = PITCHES
    sample_rate = None  # frames have no fixed rate: they follow the beat
    # Batches are padded to their longest piece, so their lengths vary from batch to batch.
    fixed_batch_shape = False

    def __init__(self, config: RunConfig, profile: Mapping[str, Any] | None = None) -> None:
        self.config = config
        # What a stored model knows of its training data (`profile`): "voices", the training
        # frames per number of voices, and "tempo" for a MIDI folder. None: not a stored model.
        self.trained_on = profile

    def build_network(self) -> CausalNetwork:
        model = self.config.model
        return build_network(model.architecture, PITCHES, PITCHES, model.network)

    def train_command(self, preset: str) -> str:
        """The benchmarks are downloaded; a MIDI folder is named by the preset."""
        return f"sequnet train {preset}"

    def open_data(
        self,
        data: Path | None,
        data_dir: Path | None,
        receptive_field: int,
        progress: FileProgress | None = None,
    ) -> PianoRollData:
        dataset = str(data) if data is not None else self.config.data.dataset
        splits = load_piano_rolls(dataset, data_dir, self.config.data, progress)
        pieces = {"train": splits.train, "valid": splits.valid, "test": splits.test}
        return PianoRollData(pieces, splits.tempo)

    def loss_sum(self, network: CausalNetwork, batch: Batch) -> Tensor:
        """Summed negative log-likelihood (nats) of the batch's predicted frames."""
        logits = network(batch.x).float()  # (B, 88, T - 1), float32 even under autocast
        bce = F.binary_cross_entropy_with_logits(logits, batch.target, reduction="none")
        return (bce.sum(1) * batch.mask).sum()  # summed over pitches, then unpadded frames

    @staticmethod
    def score(nats: float, count: int) -> float:
        """The metric: nats per predicted frame."""
        return nats / max(count, 1)

    def random_batch(
        self, batch_size: int, targets: int, receptive_field: int, generator: torch.Generator
    ) -> Batch:
        """Pieces of `targets + 1` random frames (about 9 notes each), predicted whole as in
        training; the receptive field does not matter for pieces trained from their start."""
        rolls = (torch.rand(batch_size, PITCHES, targets + 1, generator=generator) < 0.1).float()
        mask = torch.ones(batch_size, targets)
        return Batch(rolls[..., :-1].contiguous(), rolls[..., 1:].contiguous(), mask)

    def random_inputs(self, steps: int, batch_size: int, generator: torch.Generator) -> Tensor:
        return (torch.rand(steps, batch_size, PITCHES, generator=generator) < 0.1).float()

    def bench_shape(self, quick: bool) -> BenchShape:
        """Pieces of a few hundred frames at the preset's batch size (the paper's Table 1)."""
        if quick:
            return BenchShape(targets=200, sweep_levels=(2, 4, 6, 8), sweep_width=64)
        return BenchShape(targets=300)

    # --- generation ---------------------------------------------------------------------------

    @property
    def frames_per_beat(self) -> int:
        """How the training rolls were framed: the released benchmark rolls at two frames per
        beat, the user's MIDI folders at `data.frames_per_beat`. Read from the stored config,
        not from the disk."""
        dataset = self.config.data.dataset
        released = dataset in BENCHMARKS or Path(dataset).suffix.lower() in RELEASED_SUFFIXES
        return RELEASED_FRAMES_PER_BEAT if released else self.config.data.frames_per_beat

    def frame_seconds(self, tempo: float) -> float:
        """Length of one frame when played at `tempo` beats per minute."""
        if self.config.data.frame_seconds > 0:
            return self.config.data.frame_seconds
        return 60.0 / tempo / self.frames_per_beat

    def tempo(self, given: float | None, primer: Path | None) -> float:
        """The tempo a sample is written at: `given`, else the primer's, else the training
        files' typical tempo (MIDI folders), else `DEFAULT_TEMPO` (the released rolls)."""
        if given is not None:
            return given
        if primer is not None:
            return midi_tempo(read_midi(primer))
        stored = (self.trained_on or {}).get("tempo")
        return float(stored) if stored is not None else DEFAULT_TEMPO

    def generation_steps(self, steps: int | None, seconds: float | None, tempo: float) -> int:
        if steps is not None:
            return steps
        return round(seconds / self.frame_seconds(tempo)) if seconds else DEFAULT_FRAMES

    def read_primer(self, path: Path) -> np.ndarray:
        """A MIDI file framed exactly as the training files: `(P, 88)` bool."""
        roll = midi_to_roll(path, self.frames_per_beat, self.config.data.frame_seconds)
        if not roll.any():
            raise DataError(f"the primer {path} has no notes in the piano range; pass another")
        return roll

    def sampler(
        self,
        network: CausalNetwork,
        count: int,
        temperature: float,
        seed: int,
        voices: str | None = None,
    ) -> PianoRollSampler:
        return PianoRollSampler(network, count, temperature, seed, self.voice_shares(voices))

    def voice_shares(self, voices: str | None) -> np.ndarray | None:
        """The frames per number of voices (`(89,)`, any scale) that `--voices` asks for: the
        training data's (`data`, the default), all on one count (`N`), or None for independent
        pitches (`free`, and the default of a model stored without its data's counts)."""
        stored = (self.trained_on or {}).get("voices")
        if voices == "free":
            return None
        if voices in (None, "data"):
            if stored is not None:
                return np.asarray(stored, dtype=np.float64)
            if voices == "data":
                raise ConfigError(
                    "--voices data: this model was saved without its training data's voices "
                    "per frame (by an older sequnet); use --voices N or --voices free"
                )
            if self.trained_on is not None:
                warn(
                    "this model was saved without its training data's voices per frame (by an "
                    "older sequnet): every pitch is drawn independently, so frames may have "
                    "more or fewer voices than the data; --voices N keeps N per frame"
                )
            return None
        assert voices is not None
        if not (voices.isdigit() and int(voices) <= PITCHES):
            raise ConfigError(
                f"--voices must be data, free or a number of voices from 0 to {PITCHES}, "
                f"got '{voices}'"
            )
        shares = np.zeros(PITCHES + 1)
        shares[int(voices)] = 1.0
        return shares

    def write(
        self, roll: np.ndarray, primer: np.ndarray | None, path: Path, request: SampleRequest
    ) -> str:
        """Write one generated `(T, 88)` roll (after its primer) as MIDI; returns a summary."""
        full = np.concatenate([primer, roll]) if primer is not None else roll
        tempo = self.tempo(request.tempo, request.primer)
        frame = self.frame_seconds(tempo)
        write_midi(roll_to_midi(full, frame, program=request.program, tempo=tempo), path)
        onsets = np.diff(np.pad(full.astype(np.int8), ((1, 0), (0, 0))), axis=0) == 1
        return (
            f"{len(full)} frames, {len(full) * frame:.1f} s at {tempo:.4g} BPM, "
            f"{int(np.count_nonzero(onsets))} notes"
        )

    def play(self, output: np.ndarray, primer: np.ndarray | None) -> None:
        warn("--play plays audio models only; open the MIDI file in a player or a DAW")

    def audio(self, values: np.ndarray) -> None:
        """Piano rolls are written as MIDI, not sound."""
        return

    def stability(self, data: TaskData) -> PianoRollStability:
        """Per 8 frames: notes per frame, polyphony and pitch classes, and over all frames the
        voices per frame, against the test split."""
        assert isinstance(data, PianoRollData)  # what `open_data` returns
        return PianoRollStability(data.splits.get("test", []))


class PianoRollStability:
    """Per window of 8 frames (a 4/4 bar of the released rolls, at two frames per beat): notes
    started per frame, polyphony (sounding notes per frame), and the distance of its
    pitch-class distribution from the test data's (total variation: 0 the same, 1 disjoint; 1
    for a silent window); over all frames, how many have each number of voices."""

    names = ("notes/frame", "polyphony", "pitch-class distance")
    window = 8
    window_name = "8 frames"

    def __init__(self, pieces: list[np.ndarray]) -> None:
        self.counting = VoicesPerFrame(pieces)
        self.pieces = [piece for piece in pieces if len(piece) >= self.window]
        if not self.pieces:
            raise DataError(
                f"the test split has no piece of {self.window} frames or more; the stability "
                "report needs some"
            )
        counts = np.sum([_pitch_classes(piece) for piece in self.pieces], axis=0)  # (12,)
        self.profile = counts / max(counts.sum(), 1)  # (12,)

    def statistics(self, values: np.ndarray) -> dict[str, float]:
        roll = np.asarray(values, dtype=bool)  # (window, 88)
        onsets = roll & ~np.pad(roll, ((1, 0), (0, 0)))[:-1]
        classes = _pitch_classes(roll)
        sounding = classes.sum()
        distance = 0.5 * float(np.abs(classes / sounding - self.profile).sum()) if sounding else 1.0
        return {
            "notes/frame": float(onsets.sum()) / len(roll),
            "polyphony": float(roll.sum()) / len(roll),
            "pitch-class distance": distance,
        }

    def reference(self) -> list[dict[str, float]]:
        return [
            self.statistics(piece[start : start + self.window])
            for piece in self.pieces
            for start in range(0, len(piece) - self.window + 1, self.window)
        ]


class VoicesPerFrame:
    """Frames per number of voices (sounding pitches, 0 to 88), of the test data's `pieces` and
    of generated rolls."""

    name = "voices"

    def __init__(self, pieces: list[np.ndarray]) -> None:
        self.reference = voice_counts(pieces)  # (89,)

    def histogram(self, values: np.ndarray) -> np.ndarray:
        return voice_counts([np.asarray(values, dtype=bool)])  # (89,)


def _pitch_classes(roll: np.ndarray) -> np.ndarray:
    """Sounding notes per pitch class (C = 0) over the frames of `roll: (T, 88)`: `(12,)`."""
    per_pitch = np.asarray(roll, dtype=np.int64).sum(axis=0)  # (88,), pitch 0 is MIDI 21 (A0)
    return np.bincount((np.arange(PITCHES) + 21) % 12, weights=per_pitch, minlength=12)


class PianoRollSampler:
    """Draws a frame from the Bernoullis of the logits over the temperature: every pitch
    independently (no `shares`: `--voices free`), or, with `shares` (frames per number of
    voices, `(89,)`), a number of voices drawn from them and then exactly that many pitches, the
    Bernoullis conditioned on their sum (`sequnet_cli.tasks.voices`; one uniform number for the
    count, one per node of the pitch tree)."""

    value_shape = (PITCHES,)
    value_dtype = torch.bool

    def __init__(
        self,
        network: CausalNetwork,
        count: int,
        temperature: float,
        seed: int,
        shares: np.ndarray | None = None,
    ) -> None:
        self.device = next(network.parameters()).device
        self.count, self.temperature = count, temperature
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.voices: tuple[VoiceCounts, ConditionalBernoulli] | None = None
        self.random_shape: tuple[int, ...] = (PITCHES,)
        if shares is not None:
            counts = VoiceCounts(shares, self.device)
            pitches = ConditionalBernoulli(PITCHES, counts.most, self.device)
            self.voices, self.random_shape = (counts, pitches), (1 + pitches.uniforms,)

    def first_input(self) -> Tensor:
        return torch.zeros(self.count, PITCHES, device=self.device)  # silence at t = 0

    def encode(self, primer: np.ndarray) -> Tensor:
        roll = torch.from_numpy(np.asarray(primer, dtype=np.float32).T)  # (88, P)
        return roll.unsqueeze(0).to(self.device)

    def fill_random(self, block: Tensor) -> None:
        block.uniform_(generator=self.generator)

    def draw(self, output: Tensor, uniforms: Tensor) -> tuple[Tensor, Tensor]:
        logits = output / self.temperature  # (B, 88)
        if self.voices is None:  # fixed when the sampler is made: a captured step never branches
            frame = torch.lt(uniforms, torch.sigmoid(logits))  # a Bernoulli draw per pitch
        else:
            counts, pitches = self.voices
            frame = pitches.draw(logits, counts.draw(uniforms[:, 0]), uniforms[:, 1:])
        return frame, frame.to(output.dtype)


class PianoRollData:
    """Pieces per split, `(T, 88)` bool arrays (pieces shorter than two frames are dropped), and
    the training files' typical tempo when they have one."""

    def __init__(self, splits: dict[str, list[np.ndarray]], tempo: float | None = None) -> None:
        self.splits = {name: [p for p in pieces if len(p) >= 2] for name, pieces in splits.items()}
        self.tempo = tempo
        if not self.splits.get("train"):
            raise DataError(
                "the training split has no piece with two or more frames; nothing to learn"
            )

    def batches(
        self,
        split: str,
        batch_size: int,
        generator: torch.Generator | None = None,
        skip: int = 0,
        shard: Shard = WHOLE,
    ) -> Iterator[Batch]:
        """One pass over a split: shuffled with `generator`, else sorted by length (less
        padding) in batches of at least `EVAL_BATCH`. `shard`: see `Shard`."""
        pieces = self.splits.get(split, [])
        if generator is None:
            order = sorted(range(len(pieces)), key=lambda i: len(pieces[i]))
            # Padding is masked, so evaluation batches change no score; sorted by length they
            # pad little, and a few pieces per pass are much faster than one.
            size = max(batch_size, EVAL_BATCH)
            for index, start in enumerate(range(0, len(order), size)):
                if shard.takes(index):
                    yield self.collate([pieces[i] for i in order[start : start + size]])
            return
        order = torch.randperm(len(pieces), generator=generator).tolist()
        step = batch_size * shard.world  # the pieces of one optimizer step, all processes'
        for start in range(skip * step, len(order), step):
            chosen = order[start : start + step][shard.rows]
            if chosen:
                yield self.collate([pieces[i] for i in chosen])
            else:  # the last step has fewer pieces than processes: this one still takes part
                empty = self.collate([pieces[order[start]]])
                yield Batch(empty.x, empty.target, torch.zeros_like(empty.mask))

    def scored_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """The evaluation batches: they hold every piece of the split already."""
        return self.batches(split, batch_size)

    @staticmethod
    def collate(pieces: list[np.ndarray]) -> Batch:
        """Pad pieces `(T_i, 88)` into input frames 0..T-2 and targets 1..T-1."""
        longest = max(len(p) for p in pieces)
        rolls = torch.zeros(len(pieces), PITCHES, longest)
        mask = torch.zeros(len(pieces), longest - 1)
        for row, piece in enumerate(pieces):
            rolls[row, :, : len(piece)] = torch.from_numpy(np.asarray(piece, dtype=np.float32).T)
            mask[row, : len(piece) - 1] = 1.0
        return Batch(rolls[..., :-1], rolls[..., 1:], mask)

    def epoch_batches(self, batch_size: int) -> int:
        return math.ceil(len(self.splits["train"]) / batch_size)

    def epoch_generator(self, seed: int, epoch: int, running: torch.Generator) -> torch.Generator:
        """A fresh order per epoch, seeded by (seed, epoch): a resumed epoch repeats it."""
        return torch.Generator().manual_seed(seed * 1_000_003 + epoch)

    def profile(self) -> dict[str, Any]:
        """Stored with every checkpoint: the training frames per number of voices (0 to 88)
        and, for a MIDI folder, its training files' typical tempo."""
        profile: dict[str, Any] = {"voices": voice_counts(self.splits["train"]).tolist()}
        if self.tempo is not None:
            profile["tempo"] = self.tempo
        return profile


def load_piano_rolls(
    dataset: str,
    data_dir: Path | None,
    config: DataConfig,
    progress: FileProgress | None = None,
) -> PianoRollSplits:
    """Load `dataset`: a benchmark key, a `.mat` or `.pickle`/`.pkl` file, or a MIDI folder."""
    if dataset in BENCHMARKS:
        return load_benchmark(dataset, data_dir)
    path = Path(dataset).expanduser()
    if path.is_dir():
        return load_midi_folder(path, config, progress)
    if path.is_file() and path.suffix.lower() == ".mat":
        return load_mat(path)
    if path.is_file() and path.suffix.lower() in (".pickle", ".pkl"):
        return load_pickle(path)
    if path.exists():
        raise DataError(
            f"{path} is not a piano-roll dataset; use a folder of MIDI files, "
            "a .mat file (traindata/validdata/testdata) or a Boulanger-Lewandowski .pickle"
        )
    raise DataError(
        f"dataset '{dataset}' is neither a benchmark ({', '.join(BENCHMARKS)}) "
        "nor an existing file or folder; check the name or the path"
    )
