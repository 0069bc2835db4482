"""Tasks wrap a network for one kind of data: batches, loss and metric (DESIGN.md, "Tasks").

Piano roll: 88 binary pitches per frame in, 88 logits out; the loss is the binary
cross-entropy summed over pitches and averaged over predicted frames, and the metric is the
frame-wise negative log-likelihood in nats (frames 1..T-1 of each piece predicted from
0..T-2, totalled over the split and divided by the number of predicted frames). Batches are
padded at the end; causal networks never see the padding of earlier frames and a mask keeps
it out of the loss and the metric.

Raw audio: 8-bit mu-law samples (256 classes) in, a distribution over the 256 classes out,
through the run's `AudioCoding` (one-hot in and a softmax out, as in the paper, unless the
preset chooses otherwise); the loss is the cross-entropy of the last `excerpt_targets`
samples of each excerpt, computed in valid mode, and the metric is bits per audio sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models import CausalNetwork
from sequnet_cli.coding import AudioCoding
from sequnet_cli.data.audio import AudioCorpus
from sequnet_cli.errors import DataError

PITCHES = 88
EVAL_BATCH = 16  # piano-roll pieces per evaluation pass, at least


@dataclass
class Batch:
    """Network input `x: (B, C, T)`, targets, and a mask of the predicted positions."""

    x: Tensor
    target: Tensor
    mask: Tensor  # (B, T_out) float, 1 where a prediction counts

    @property
    def count(self) -> int:
        return int(self.mask.sum().item())

    def to(self, device: torch.device) -> Batch:
        return Batch(self.x.to(device), self.target.to(device), self.mask.to(device))


class PianoRollTask:
    """Frame-by-frame piano rolls: `(T, 88)` boolean pieces, column 0 = MIDI pitch 21."""

    kind = "piano-roll"
    in_channels = out_channels = PITCHES
    metric = "NLL"
    unit = "frames"

    def __init__(self, splits: dict[str, list[np.ndarray]], frame_seconds: float = 0.25) -> None:
        self.splits = {name: [p for p in pieces if len(p) >= 2] for name, pieces in splits.items()}
        if not self.splits.get("train"):
            raise DataError(
                "the training split has no piece with two or more frames; nothing to learn"
            )
        self.frame_seconds = frame_seconds

    def batches(
        self, split: str, batch_size: int, generator: torch.Generator | None = None, skip: int = 0
    ) -> Iterator[Batch]:
        """One pass over a split: shuffled with `generator`, else sorted by length (less padding)
        in batches of at least `EVAL_BATCH`.

        `skip`: batches of this pass already done (a resumed epoch); they are not built.
        """
        pieces = self.splits.get(split, [])
        if generator is not None:
            order = torch.randperm(len(pieces), generator=generator).tolist()
        else:
            order = sorted(range(len(pieces)), key=lambda i: len(pieces[i]))
            # Padding is masked, so evaluation batches change no score; sorted by length they
            # pad little, and a few pieces per pass are much faster than one.
            batch_size = max(batch_size, EVAL_BATCH)
        for start in range(skip * batch_size, len(order), batch_size):
            yield self.collate([pieces[i] for i in order[start : start + batch_size]])

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

    def loss_sum(self, network: CausalNetwork, batch: Batch) -> Tensor:
        """Summed negative log-likelihood (nats) of the batch's predicted frames."""
        logits = network(batch.x)  # (B, 88, T - 1)
        bce = F.binary_cross_entropy_with_logits(logits, batch.target, reduction="none").sum(
            1
        )  # (B, T - 1)
        return (bce * batch.mask).sum()

    def epoch_batches(self, batch_size: int) -> int:
        """Batches in one pass over the training split."""
        return math.ceil(len(self.splits["train"]) / batch_size)

    @staticmethod
    def score(nats: float, count: int) -> float:
        """The metric: nats per predicted frame."""
        return nats / max(count, 1)


class AudioTask:
    """Raw audio as 8-bit mu-law classes; excerpts of receptive field + targets samples.

    An "epoch" of audio training is `steps_per_epoch` random batches; validation uses the
    corpus's held-out files (its `test` split) through fixed, seeded excerpts.
    """

    kind = "audio"
    metric = "bpa"
    unit = "samples"

    def __init__(
        self,
        corpus: AudioCorpus,
        targets: int,
        receptive_field: int,
        eval_batches: int,
        steps_per_epoch: int,
        coding: AudioCoding | None = None,
    ) -> None:
        self.corpus = corpus
        self.coding = coding or AudioCoding()
        self.targets = targets
        self.length = (
            receptive_field + targets
        )  # R - 1 context and N targets as inputs, then the last target
        self.eval_batches = eval_batches
        self.steps_per_epoch = steps_per_epoch
        self.sample_rate = corpus.sample_rate
        self._fixed: dict[tuple[str, int], Tensor] = {}  # evaluation excerpts by (split, batch)

    def collate(self, codes: Tensor) -> Batch:
        """`codes: (B, L)` int64 -> coded inputs of all but the last, targets of the last N."""
        x = self.coding.encode(codes[:, :-1])  # (B, C, L - 1)
        target = codes[:, -self.targets :]  # (B, N)
        return Batch(x, target, torch.ones(target.shape, dtype=torch.float32))

    def loss_sum(self, network: CausalNetwork, batch: Batch) -> Tensor:
        """Summed cross-entropy (nats) of the last `targets` samples, in valid mode."""
        output = network(batch.x, outputs=self.targets)  # (B, C, N)
        return self.coding.nll(output, batch.target)

    def batches(
        self, split: str, batch_size: int, generator: torch.Generator | None = None, skip: int = 0
    ) -> Iterator[Batch]:
        """Random excerpts for training (with `generator`), or the fixed, seeded excerpts.

        `skip`: training batches of this period already done; the generator's state already
        reflects them, so nothing is drawn for them.
        """
        data = self.corpus.train if split == "train" else self.corpus.test
        if generator is not None:
            for _ in range(skip, self.steps_per_epoch):
                yield self.collate(data.random_excerpts(batch_size, self.length, generator))
            return
        key = (split, batch_size)
        if key not in self._fixed:  # the same excerpts at every evaluation: read them once
            self._fixed[key] = data.fixed_excerpts(
                self.eval_batches * batch_size, self.length, seed=1234
            )
        codes = self._fixed[key]
        for start in range(0, codes.shape[0], batch_size):
            yield self.collate(codes[start : start + batch_size])

    def epoch_batches(self, batch_size: int) -> int:
        return self.steps_per_epoch

    @staticmethod
    def score(nats: float, count: int) -> float:
        """The metric: bits per predicted audio sample."""
        return nats / max(count, 1) / math.log(2)


Task = PianoRollTask | AudioTask
