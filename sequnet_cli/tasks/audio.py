"""The raw-audio task: 8-bit mu-law samples at 16 kHz (paper §4.2; DESIGN.md, "Tasks").

Samples (256 classes) go in and a distribution over the 256 classes comes out, through the
run's `AudioCoding` (one-hot in and a softmax out, as in the paper, unless the preset chooses
otherwise). Training excerpts are `receptive field + excerpt_targets` samples long; the loss is
the cross-entropy of the last `excerpt_targets` samples, computed in valid mode, and the metric
is bits per audio sample. An "epoch" is `eval_every` (else 500) random batches; validation
scores fixed, seeded excerpts (`train.eval_batches` batches of them), `sequnet evaluate` every
sample of a split. Samples are written as 16-bit WAV.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from models import CausalNetwork, build_network
from sequnet_cli.audio_io import audio_stats, play, spectral_flatness, write_wav
from sequnet_cli.config import RunConfig
from sequnet_cli.data import SPLITS
from sequnet_cli.data.audio import AudioCorpus, AudioSplit
from sequnet_cli.data.audio_decoding import (
    SILENCE_CODE,
    load_audio,
    mu_law_decode,
    mu_law_encode,
)
from sequnet_cli.errors import ConfigError, DataError
from sequnet_cli.tasks import (
    DEFAULT_TEMPO,
    WHOLE,
    Batch,
    BenchShape,
    FileProgress,
    Shard,
    TaskData,
)
from sequnet_cli.tasks.audio_coding import CLASSES, AudioCoding

if TYPE_CHECKING:
    from sequnet_cli.generation import SampleRequest

DEFAULT_SECONDS = 2.0  # generated when neither --steps nor --seconds is given
DEFAULT_STEPS_PER_EPOCH = 500
EVALUATION_SEED = 1234  # the fixed evaluation excerpts
# A whole split is scored in excerpts of at least this many receptive fields of targets, so
# that the context computed again for each excerpt costs at most 1 / this of the work.
EVALUATION_CONTEXTS = 2
REFERENCE_WINDOWS = 600  # seconds of test audio the stability report compares with, at most


class AudioTask:
    """Raw audio as 8-bit mu-law classes; see the module docstring."""

    name = "audio"
    metric = "bpa"
    metric_title = "bits per audio sample"
    unit = "samples"
    output_suffixes = (".wav",)
    sample_options: frozenset[str] = frozenset()
    generated_bytes = 64  # the codes, the waveform and its statistics, in several dtypes
    # The paper samples audio at 0.95 (§5.2): it "stabilises the generation process".
    default_temperature = 0.95
    fixed_batch_shape = True  # excerpts of receptive field + excerpt_targets samples

    def __init__(self, config: RunConfig, profile: Mapping[str, Any] | None = None) -> None:
        self.config = config  # audio sampling needs nothing of the data: `profile` is empty
        self.coding = AudioCoding.of(config.data)
        self.in_channels, self.out_channels = self.coding.in_channels, self.coding.out_channels
        self.sample_rate = config.data.sample_rate

    def build_network(self) -> CausalNetwork:
        model = self.config.model
        return build_network(model.architecture, self.in_channels, self.out_channels, model.network)

    def train_command(self, preset: str) -> str:
        """Audio presets name no download: unless the preset's folder exists, `--data`."""
        folder = Path(self.config.data.dataset).expanduser()
        data = "" if folder.is_dir() else " --data FOLDER_OF_RECORDINGS"
        return f"sequnet train {preset}{data}"

    def open_data(
        self,
        data: Path | None,
        data_dir: Path | None,
        receptive_field: int,
        progress: FileProgress | None = None,
    ) -> AudioData:
        dataset = str(data) if data is not None else self.config.data.dataset
        folder = Path(dataset).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"audio dataset '{dataset}' is not a folder; point --data at a folder of "
                "recordings (WAV, FLAC, OGG, ...), e.g. an unpacked MAESTRO download"
            )
        corpus = AudioCorpus.open(
            folder,
            self.sample_rate,
            valid_fraction=self.config.data.valid_fraction,
            test_fraction=self.config.data.test_fraction,
            progress=progress,
        )
        return AudioData(self, corpus, receptive_field)

    def loss_sum(self, network: CausalNetwork, batch: Batch) -> Tensor:
        """Summed cross-entropy (nats) of the batch's targets, computed in valid mode; the
        softmax and the loss always in float32. The batch holds codes; the network's input
        is made from them here, on the batch's device."""
        x = self.coding.encode(batch.x)  # (B, C, L - 1)
        output = network(x, outputs=batch.target.shape[-1])  # (B, C, N)
        return self.coding.nll(output.float(), batch.target.long())  # float32 under autocast

    @staticmethod
    def score(nats: float, count: int) -> float:
        """The metric: bits per predicted audio sample."""
        return nats / max(count, 1) / math.log(2)

    def collate(self, codes: Tensor, targets: int) -> Batch:
        """`codes: (B, L)` -> a batch of 8-bit codes: all but the last as inputs `(B, L - 1)`,
        the last `targets` as targets `(B, N)`, every target counted (a boolean mask). The
        network's input is made from the codes by `loss_sum`, on the device."""
        codes = codes.to(torch.uint8)
        target = codes[:, -targets:].contiguous()
        mask = torch.ones(target.shape, dtype=torch.bool)
        return Batch(codes[:, :-1].contiguous(), target, mask)

    def random_batch(
        self, batch_size: int, targets: int, receptive_field: int, generator: torch.Generator
    ) -> Batch:
        """Uniformly random samples: excerpts of `receptive_field + targets` classes."""
        length = receptive_field + targets
        codes = torch.randint(0, CLASSES, (batch_size, length), generator=generator)
        return self.collate(codes, targets)

    def random_inputs(self, steps: int, batch_size: int, generator: torch.Generator) -> Tensor:
        codes = torch.randint(0, CLASSES, (steps * batch_size, 1), generator=generator)
        coded = self.coding.encode(codes)  # (steps * B, C, 1)
        return coded.reshape(steps, batch_size, self.in_channels)

    def bench_shape(self, quick: bool) -> BenchShape:
        """The preset's excerpts at batch 2 (the paper's Table 1). `--quick`: a quarter of the
        width and a fifth of the targets; the depth, which decides the ratios, stays."""
        if quick:
            return BenchShape(
                targets=1000, batch_size=2, width_scale=0.25, sweep_levels=(2, 4, 6, 8),
                sweep_width=32, sweep_targets=500,
            )  # fmt: skip
        return BenchShape(
            targets=self.config.data.excerpt_targets, batch_size=2, sweep_levels=tuple(range(2, 12))
        )

    # --- generation ---------------------------------------------------------------------------

    def tempo(self, given: float | None, primer: Path | None) -> float:
        return DEFAULT_TEMPO  # audio has no beat

    def generation_steps(self, steps: int | None, seconds: float | None, tempo: float) -> int:
        if steps is not None:
            return steps
        return round((seconds or DEFAULT_SECONDS) * self.sample_rate)

    def read_primer(self, path: Path) -> np.ndarray:
        """An audio file as mu-law codes at the model's rate: `(P,)` uint8."""
        if not path.is_file():
            raise DataError(f"the primer {path} does not exist; check the path")
        return mu_law_encode(load_audio(path, self.sample_rate))

    def sampler(
        self,
        network: CausalNetwork,
        count: int,
        temperature: float,
        seed: int,
        voices: str | None = None,
    ) -> AudioSampler:
        if voices is not None:
            raise ConfigError("--voices is for piano-roll models; leave it out for audio")
        return AudioSampler(network, self.coding, count, temperature, seed)

    def waveform(self, codes: np.ndarray, primer: np.ndarray | None) -> np.ndarray:
        """Float audio `(T,)` of generated codes, after the primer's if one is given."""
        if primer is not None:
            codes = np.concatenate([primer, codes])
        return mu_law_decode(codes)

    def write(
        self, codes: np.ndarray, primer: np.ndarray | None, path: Path, request: SampleRequest
    ) -> str:
        """Write one generated sequence (after its primer) as 16-bit WAV; returns a summary."""
        waveform = self.waveform(codes, primer)
        write_wav(path, waveform, self.sample_rate)
        stats = audio_stats(waveform, self.sample_rate)
        return (
            f"{len(waveform) / self.sample_rate:.2f} s at {self.sample_rate} Hz; "
            f"rms {stats['rms']:.3f}, peak {stats['peak']:.3f}, "
            f"spectral centroid {stats['spectral_centroid_hz']:.0f} Hz"
        )

    def play(self, codes: np.ndarray, primer: np.ndarray | None) -> None:
        """Play one generated sequence; raises `DeviceError` without an output device."""
        play(self.waveform(codes, primer), self.sample_rate)

    def audio(self, values: np.ndarray) -> np.ndarray:
        """Mu-law codes as float audio `(T,)`."""
        return mu_law_decode(values)

    def stability(self, data: TaskData) -> AudioStability:
        """Per second: RMS, spectral flatness and centroid, against the test split's."""
        assert isinstance(data, AudioData)  # what `open_data` returns
        return AudioStability(self.sample_rate, data.corpus.test)


class AudioStability:
    """Per second of audio: its RMS, spectral flatness (near 0 for tones, about 0.56 for white
    noise) and spectral centroid; the reference is up to `REFERENCE_WINDOWS` seconds of the
    test audio, spread over it."""

    names = ("rms", "flatness", "centroid Hz")
    window_name = "second"
    counting = None

    def __init__(self, sample_rate: int, split: AudioSplit) -> None:
        self.window, self.sample_rate, self.split = sample_rate, sample_rate, split

    def statistics(self, values: np.ndarray) -> dict[str, float]:
        audio = mu_law_decode(values)
        stats = audio_stats(audio, self.sample_rate)
        return {
            "rms": stats["rms"],
            "flatness": spectral_flatness(audio, self.sample_rate),
            "centroid Hz": stats["spectral_centroid_hz"],
        }

    def reference(self) -> list[dict[str, float]]:
        split, window = self.split, self.window
        starts = [
            int(start) + offset
            for start, length in zip(split.starts, split.lengths, strict=True)
            for offset in range(0, int(length) - window + 1, window)
        ]
        if not starts:
            raise DataError(
                f"the test audio has no file of a second or more ({split.seconds:.1f} s in all); "
                "the stability report needs some"
            )
        picks = np.linspace(0, len(starts) - 1, min(len(starts), REFERENCE_WINDOWS)).round()
        return [self.statistics(split.samples[starts[int(i)] :][:window]) for i in picks]


class AudioSampler:
    """Draws one of the 256 classes per sequence from the softmax of the log-probabilities over
    the temperature, by the Gumbel-max trick: the class whose log-probability plus Gumbel noise
    times the temperature is largest (argmax(log p / T + g) = argmax(log p + T g)) is an exact
    draw, one addition and one reduction per step where inverting the cumulative distribution
    takes a softmax, a cumulative sum and a search. The noise of a block of steps is drawn at
    once. The next input is the drawn class's row of a table of the coding's inputs."""

    value_shape: tuple[int, ...] = ()
    value_dtype = torch.uint8
    random_shape = (CLASSES,)

    def __init__(
        self, network: CausalNetwork, coding: AudioCoding, count: int, temperature: float, seed: int
    ) -> None:
        self.device = next(network.parameters()).device
        self.coding, self.count, self.temperature = coding, count, temperature
        self.context = network.receptive_field  # primer samples that can still matter
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        classes = torch.arange(CLASSES, device=self.device).unsqueeze(0)  # (1, 256)
        self.inputs = coding.encode(classes)[0].t().contiguous()  # (256, in_channels)
        self.step_input = torch.zeros(count, coding.in_channels, device=self.device)  # reused

    def first_input(self) -> Tensor:
        silence = torch.full((self.count,), SILENCE_CODE, device=self.device)
        return torch.index_select(self.inputs, 0, silence, out=self.step_input)

    def encode(self, primer: np.ndarray) -> Tensor:
        codes = torch.from_numpy(np.asarray(primer[-self.context :], dtype=np.int64))
        return self.coding.encode(codes.unsqueeze(0).to(self.device))  # (1, C, P)

    def fill_random(self, block: Tensor) -> None:
        """Gumbel noise times the temperature, `-T log(-log U)` with U uniform in [0, 1), in
        vectorised logarithms (`exponential_` takes one scalar logarithm per number). U = 0
        gives the noise -inf: its class is left out of that one draw, once in 2**24."""
        block.uniform_(generator=self.generator).log_().neg_().log_().mul_(-self.temperature)

    def draw(self, output: Tensor, randoms: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.coding.log_probs(output).add_(randoms)  # (B, 256)
        codes = torch.argmax(scores, dim=-1)  # (B,)
        next_input = torch.index_select(self.inputs, 0, codes, out=self.step_input)
        return codes.to(torch.uint8), next_input


class AudioData:
    """An audio corpus as training batches of random excerpts and fixed evaluation excerpts.

    Validation uses the corpus's `valid` files; `sequnet evaluate` scores any split that has
    files.
    """

    def __init__(self, task: AudioTask, corpus: AudioCorpus, receptive_field: int) -> None:
        self.task, self.corpus = task, corpus
        self.targets = task.config.data.excerpt_targets
        # R - 1 context and N targets as inputs, then the last target.
        self.length = receptive_field + self.targets
        self.eval_batches = task.config.train.eval_batches
        self.steps_per_epoch = task.config.train.eval_every or DEFAULT_STEPS_PER_EPOCH
        self.splits = tuple(name for name in SPLITS if corpus.split(name).files)
        self._fixed: dict[tuple[str, int], Tensor] = {}  # evaluation excerpts by (split, batch)

    def batches(
        self,
        split: str,
        batch_size: int,
        generator: torch.Generator | None = None,
        skip: int = 0,
        shard: Shard = WHOLE,
    ) -> Iterator[Batch]:
        """Random excerpts for training (with `generator`), or the fixed, seeded excerpts.

        `skip`: training batches of this period already done; the generator's state already
        reflects them, so nothing is drawn for them. `shard`: see `Shard`.
        """
        data = self.corpus.split(split)
        if generator is not None:
            for _ in range(skip, self.steps_per_epoch):
                codes = data.random_excerpts(
                    batch_size * shard.world, self.length, generator, rows=shard.rows
                )
                yield self.task.collate(codes, self.targets)
            return
        key = (split, batch_size)
        if key not in self._fixed:  # the same excerpts at every evaluation: read them once
            self._fixed[key] = data.fixed_excerpts(
                self.eval_batches * batch_size, self.length, seed=EVALUATION_SEED
            )
        codes = self._fixed[key]
        for index, start in enumerate(range(0, codes.shape[0], batch_size)):
            if shard.takes(index):
                yield self.task.collate(codes[start : start + batch_size], self.targets)

    def scored_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """Every sample of the split predicted once from its whole receptive field (the samples
        before a file's start are silence, see `AudioSplit.covering_excerpts`), in valid mode,
        `batch_size` excerpts at a time (a file's last, shorter one with those of its length).
        """
        context = self.length - self.targets  # the receptive field
        targets = max(self.targets, EVALUATION_CONTEXTS * context)
        waiting: dict[int, list[np.ndarray]] = {}  # excerpts by length, until a batch is full
        for excerpt in self.corpus.split(split).covering_excerpts(context, targets):
            group = waiting.setdefault(excerpt.shape[0], [])
            group.append(excerpt)
            if len(group) == batch_size:
                yield self._scored_batch(waiting.pop(excerpt.shape[0]), context)
        for group in waiting.values():
            yield self._scored_batch(group, context)

    def _scored_batch(self, excerpts: list[np.ndarray], context: int) -> Batch:
        codes = torch.from_numpy(np.stack(excerpts))  # (B, context + n) uint8 codes
        return self.task.collate(codes, codes.shape[1] - context)

    def epoch_batches(self, batch_size: int) -> int:
        return self.steps_per_epoch

    def epoch_generator(self, seed: int, epoch: int, running: torch.Generator) -> torch.Generator:
        """One stream of random excerpts across epochs; the trainer checkpoints its state."""
        return running

    def profile(self) -> dict[str, Any]:
        return {}  # audio sampling needs nothing of the data
