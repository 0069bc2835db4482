"""One training step: forward, loss, backward, clipping, the optimizer (and the weight average).

The trainer runs it for every batch and `sequnet bench` times it on random batches built by the
same task, so any change to the step (its optimizer, precision or capture) shows in both.
"""

from __future__ import annotations

import copy

import torch

from models import CausalNetwork
from sequnet_cli.config import TrainConfig
from sequnet_cli.errors import DeviceError
from sequnet_cli.tasks import Batch, Task


class TrainingStep:
    """Updates `network` (already on its device) from one batch at a time.

    With `config.ema > 0`, a moving average of the weights is kept beside them (`averaged`);
    the trainer validates both and keeps whichever scores better.
    """

    def __init__(self, network: CausalNetwork, task: Task, config: TrainConfig) -> None:
        self.network, self.task, self.config = network, task, config
        self.optimizer = make_optimizer(network, config.lr, config.weight_decay)
        self.averaged = WeightAverage(network, config.ema) if config.ema > 0 else None

    def __call__(self, batch: Batch) -> tuple[float, int]:
        """One optimizer step on `batch` (on the network's device); returns the batch's mean
        loss in nats per predicted element and how many elements were predicted."""
        count = max(batch.count, 1)
        try:
            self.optimizer.zero_grad(set_to_none=True)
            total = self.task.loss_sum(self.network, batch)
            loss = total if self.config.loss == "sum" else total / count
            loss.backward()
            if self.config.clip > 0:
                torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.clip)
            self.optimizer.step()
            if self.averaged is not None:
                self.averaged.update(self.network)
        except torch.OutOfMemoryError as error:
            raise DeviceError(
                f"out of memory at batch size {self.config.batch_size}; "
                "lower it with --set train.batch_size=N"
            ) from error
        return total.item() / count, count


class WeightAverage:
    """An exponential moving average of a network's weights (and buffers), warmed up.

    After `n` updates the average moves with decay `min(decay, (1 + n) / (10 + n))`: it follows
    the weights closely while they change fast and settles to `decay` only once the run is long
    enough for that (after about `10 / (1 - decay)` updates). Without the warm-up, a decay of
    0.9998 keeps mostly the random initial weights for the first thousands of steps.
    """

    def __init__(self, network: CausalNetwork, decay: float) -> None:
        self.decay = decay
        self.module: CausalNetwork = copy.deepcopy(network)
        self.module.requires_grad_(False)
        self.updates = 0

    def update(self, network: CausalNetwork) -> None:
        """Move the average towards `network`'s current weights."""
        weight = 1 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        averaged, current = self._tensors(self.module), self._tensors(network)
        with torch.no_grad():
            floating = [
                (a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()
            ]
            if floating:
                targets, sources = zip(*floating, strict=True)
                torch._foreach_lerp_(list(targets), list(sources), weight)
            for a, c in zip(averaged, current, strict=True):
                if not a.is_floating_point():
                    a.copy_(c)  # counters and flags follow the trained network
        self.updates += 1

    def load(self, weights: dict[str, torch.Tensor], updates: int) -> None:
        """Restore an average saved after `updates` updates."""
        self.module.load_state_dict(weights)
        self.updates = updates

    @staticmethod
    def _tensors(network: CausalNetwork) -> list[torch.Tensor]:
        return [*network.parameters(), *network.buffers()]


def make_optimizer(network: CausalNetwork, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam, or AdamW when there is a weight decay (decoupled from the gradient, as AdamW does)."""
    # The fused kernels (CPU and CUDA) update all tensors in one pass: on a 2-core CPU, one JSB
    # step of Adam takes a third of the time of the default implementation.
    if weight_decay == 0:
        return torch.optim.Adam(network.parameters(), lr=lr, fused=True)
    return torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
