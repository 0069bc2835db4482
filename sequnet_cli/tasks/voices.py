"""Frames with a given number of voices: the conditional Bernoulli distribution (DESIGN.md,
"Tasks").

The piano-roll model gives each pitch of a frame an independent Bernoulli, so a frame's number of
voices (sounding pitches) is a sum of 88 draws and spreads far wider than in the data. The same
Bernoullis conditioned on their sum being `k` give a set `S` of `k` pitches the probability
`prod_{i in S} w_i / e_k(w)`, where `w_i = p_i / (1 - p_i) = exp(logit_i)` are the odds and `e_k`
is the `k`-th elementary symmetric polynomial of the odds (the conditional Bernoulli distribution,
Chen, Dempster and Liu 1994). `ConditionalBernoulli` draws it exactly, by divide and conquer over
a binary tree of the pitches: going up, a node's polynomial `prod (1 + w_i x)` over its pitches
(truncated at the largest `k` it may be asked for) is the product of its children's; going down
from `k` at the root, each node splits its count `c` between its children, `a` to the left with
probability proportional to `left_a * right_(c - a)`. The leaves end with 0 or 1: exactly `k`
pitches.

It runs inside a generation step that may be replayed as a CUDA graph: tensor operations only,
with shapes fixed when it is made, one given uniform number per node (no generator, no
`.item()`), and everything in log space, since logits over a low temperature are large. The tree
takes log2 steps each way where a pitch-by-pitch recursion takes one per pitch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Far below any log of a product of odds, yet finite: subtracting it from -inf gives -inf, not
# the NaN that subtracting -inf itself would.
FLOOR = -1e30
# Weights below e**-80 of the largest they are added to count as e**-80: no float32 sum notices,
# and their exponentials would otherwise be subnormal numbers, which CPUs compute very slowly.
# (A split this makes possible where it is not is never drawn: see `_Level`'s limits.)
NEGLIGIBLE = -80.0


@dataclass(frozen=True)
class _Level:
    """One level of nodes above the leaves: the highest degree its nodes and their children keep
    (`D`, `d`); for each number `a` of a node's voices its left child may take, `d - a` (where
    its right child's share sits in that child's polynomial padded by `d`); and the most each
    node's left and right child can take (its pitches, padding aside, and at most `d`)."""

    degree: int
    children_degree: int
    offsets: Tensor  # (d + 1,)
    left_most: Tensor  # (nodes,)
    right_most: Tensor  # (nodes,)


class ConditionalBernoulli:
    """Draws exactly `k` of `size` independent Bernoullis, conditioned on `k` succeeding, for any
    `k` up to `most`; see the module docstring. A draw takes `uniforms` numbers per row."""

    def __init__(self, size: int, most: int, device: torch.device | str = "cpu") -> None:
        if not 0 <= most <= size:
            raise ValueError(f"at most {size} of {size} can be drawn, not {most}")
        self.size, self.most = size, most
        self.leaves = 1 << math.ceil(math.log2(size))  # padded with leaves of odds 0
        self.uniforms = self.leaves - 1  # one per node above the leaves
        self.levels: list[_Level] = []  # from the leaves' parents up to the root
        for height in range(1, self.leaves.bit_length()):
            d, width = min(1 << (height - 1), most), 1 << (height - 1)  # a child's degree, leaves
            starts = torch.arange(0, self.leaves, width, device=device)  # (2 * nodes,)
            pitches = (size - starts).clamp(0, width).clamp_(max=d)
            offsets = d - torch.arange(d + 1, device=device)
            degree = min(1 << height, most)
            self.levels.append(_Level(degree, d, offsets, pitches[0::2], pitches[1::2]))

    def draw(self, log_odds: Tensor, counts: Tensor, uniforms: Tensor) -> Tensor:
        """`counts[b]` pitches of row `b` drawn with odds `exp(log_odds)`: `(B, size)` bool.

        log_odds: `(B, size)` finite (the logits over the temperature); counts: `(B,)` long, each
        from 0 to `most`; uniforms: `(B, self.uniforms)` in [0, 1).
        """
        children = self._children(log_odds.float())
        counts = counts.view(-1, 1)  # (B, 1): the root's
        start = 0
        for level, (left, right) in zip(reversed(self.levels), reversed(children), strict=True):
            nodes = counts.shape[1]
            # For each count a the left child may take: log of left_a * right_(c - a), -inf
            # where the right child cannot take c - a (its padding).
            joint = left + right.gather(-1, counts.unsqueeze(-1) + level.offsets)
            drawn = _inverse_cdf(_exp_scaled(joint), uniforms[:, start : start + nodes])
            start += nodes
            # Never more than a child can take, whatever rounding did: exactly k in the end.
            taken = torch.maximum(torch.minimum(drawn, level.left_most), counts - level.right_most)
            counts = torch.stack([taken, counts - taken], dim=-1).flatten(1)  # (B, 2 * nodes)
        return counts[:, : self.size] > 0

    def _children(self, log_odds: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per level, from the leaves' parents up: its nodes' children's polynomials, each the
        `log e_j` over the child's pitches for `j` from 0 to `d`: the left ones
        `(B, nodes, d + 1)`, the right ones padded with `d` log-zeros on each side
        `(B, nodes, 3d + 1)`. Padding leaves have odds 0."""
        padded = F.pad(log_odds, (0, self.leaves - self.size), value=-math.inf)  # (B, leaves)
        below = torch.stack([torch.zeros_like(padded), padded], dim=-1)  # log of (1, w)
        below = below[..., : min(self.most, 1) + 1]
        children = []
        for level in self.levels:
            d = level.children_degree
            left = below[:, 0::2]  # (B, nodes, d + 1)
            right = F.pad(below[:, 1::2], (d, d), value=-math.inf)  # (B, nodes, 3d + 1)
            children.append((left, right))
            # The degree-m coefficient of the product is the sum over a of left_a * right_(m - a);
            # the m-th window of the padded right child holds right_(m - a) for a from d to 0.
            windows = right.unfold(-1, d + 1, 1)[..., : level.degree + 1, :]  # (.., D + 1, d + 1)
            terms = left.flip(-1).unsqueeze(-2) + windows  # (B, nodes, D + 1, d + 1)
            peak = terms.amax(dim=-1, keepdim=True).clamp_(min=FLOOR)
            below = _exp_below(terms, peak).sum(dim=-1).log_() + peak.squeeze(-1)  # (.., D + 1)
        return children


def _exp_scaled(logs: Tensor) -> Tensor:
    """`exp(logs)` over its largest value along the last dimension (unnormalised
    probabilities); never NaN, even for a row of -inf."""
    return _exp_below(logs, logs.amax(dim=-1, keepdim=True).clamp_(min=FLOOR))


def _exp_below(logs: Tensor, peak: Tensor) -> Tensor:
    """`exp(logs - peak)` for `logs <= peak`, and at least `e**NEGLIGIBLE`."""
    return (logs - peak).clamp_(min=NEGLIGIBLE).exp_()


def _inverse_cdf(weights: Tensor, uniforms: Tensor) -> Tensor:
    """One category per row of `weights: (..., C)` (unnormalised probabilities, not all 0), by
    inverting its CDF at `uniforms: (...)` in [0, 1): `(...)` long, from 0 to C (C only where
    rounding put a number past the CDF's end)."""
    cumulative = weights.cumsum(dim=-1)
    target = (uniforms * cumulative[..., -1]).unsqueeze(-1)
    return torch.searchsorted(cumulative, target, right=True).squeeze(-1)


class VoiceCounts:
    """Draws a number of voices per frame from a fixed distribution: `shares: (K + 1,)` over 0..K
    voices (the training data's frames, or all on one count)."""

    def __init__(self, shares: np.ndarray, device: torch.device | str = "cpu") -> None:
        shares = np.asarray(shares, dtype=np.float64)
        if shares.ndim != 1 or not shares.sum() > 0 or (shares < 0).any():
            raise ValueError("voice counts need a non-negative share per count, not all zero")
        self.most = int(np.flatnonzero(shares)[-1])
        probabilities = torch.tensor(shares[: self.most + 1] / shares.sum(), dtype=torch.float32)
        # The distribution is fixed, so its CDF is summed once, not at every generation step.
        self.cumulative = probabilities.cumsum(0).to(device)  # (K + 1,)

    def draw(self, uniforms: Tensor) -> Tensor:
        """One count per uniform number of `uniforms: (B,)`, by inverting the CDF (as
        `_inverse_cdf` does): `(B,)` long."""
        target = uniforms * self.cumulative[-1]  # (B,)
        drawn = torch.searchsorted(self.cumulative, target, right=True)
        return drawn.clamp_(max=self.most)  # past the CDF's end only by rounding
