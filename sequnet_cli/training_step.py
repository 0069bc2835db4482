"""One training step: forward, loss, backward, clipping, the optimizer (and the weight average).

The trainer runs it for every batch and `sequnet bench` times it on random batches built by the
same task, so any change to the step (its optimizer, precision or capture) shows in both.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from models import CausalNetwork
from sequnet_cli.config import TrainConfig
from sequnet_cli.errors import DeviceError
from sequnet_cli.tasks import Batch, Task


class TrainingStep:
    """Updates `network` (already on its device) from one batch at a time.

    With `config.ema > 0`, an exponential moving average of the weights is kept beside them
    (`averaged`); validation, checkpoints and sampling use it.
    """

    def __init__(self, network: CausalNetwork, task: Task, config: TrainConfig) -> None:
        self.network, self.task, self.config = network, task, config
        # What the batch goes through: the network itself, or a wrapper of it that also
        # exchanges gradients with other processes (`sequnet_cli.distributed`).
        self.forward_network: CausalNetwork = network
        self.optimizer = make_optimizer(network, config.lr, config.weight_decay)
        self.averaged = averaged_model(network, config.ema) if config.ema > 0 else None

    def __call__(self, batch: Batch) -> tuple[float, int]:
        """One optimizer step on `batch` (on the network's device); returns the batch's mean
        loss in nats per predicted element and how many elements were predicted."""
        try:
            self.optimizer.zero_grad(set_to_none=True)
            total = self.task.loss_sum(self.forward_network, batch)
            loss, total, count = self.objective(total, batch.count)
            loss.backward()
            if self.config.clip > 0:
                torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.clip)
            self.optimizer.step()
            if self.averaged is not None:
                self.averaged.update_parameters(self.network)
        except torch.OutOfMemoryError as error:
            raise DeviceError(
                f"out of memory at batch size {self.config.batch_size}; "
                "lower it with --set train.batch_size=N"
            ) from error
        return total.item() / count, count

    def objective(self, total: Tensor, count: int) -> tuple[Tensor, Tensor, int]:
        """The loss to minimise from a batch's summed NLL over `count` predicted elements,
        with the summed NLL and the count it reports (a distributed step: of all processes)."""
        count = max(count, 1)
        return (total if self.config.loss == "sum" else total / count), total, count

    @property
    def evaluated(self) -> CausalNetwork:
        """The network that is validated, checkpointed and sampled: the average if there is one."""
        if self.averaged is None:
            return self.network
        return self.averaged.module  # type: ignore[return-value]


def make_optimizer(network: CausalNetwork, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam, or AdamW when there is a weight decay (decoupled from the gradient, as AdamW does)."""
    # The fused kernels (CPU and CUDA) update all tensors in one pass: on a 2-core CPU, one JSB
    # step of Adam takes a third of the time of the default implementation.
    if weight_decay == 0:
        return torch.optim.Adam(network.parameters(), lr=lr, fused=True)
    return torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay, fused=True)


def averaged_model(network: CausalNetwork, decay: float) -> AveragedModel:
    """An exponential moving average of `network`'s weights (and buffers) with `decay`."""
    return AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
