"""One training step: forward, loss, backward, clipping, the optimizer (and the weight average).

The trainer runs it for every batch and `sequnet bench` times it on random batches built by the
same task, so any change to the step (its optimizer, precision or capture) shows in both.

Precision (`train.precision`): `fp32`, or `bf16`, which runs the network under autocast in
bfloat16 while the weights, their gradients, the optimizer and the checkpoints stay in float32
and the tasks compute the loss and its softmax in float32; `auto` is bf16 on CUDA GPUs that
support it, fp32 elsewhere. Capture (`train.capture`, CUDA only): where the task's batches all
have one shape (`Task.fixed_batch_shape`: audio excerpts; piano-roll pieces vary in length, so a
graph would rarely replay), the step is replayed as a CUDA graph (`sequnet_cli.captured_step`);
if capture fails, one warning and the step runs eagerly.

A step returns its loss as tensors on the device, never read back here: the host goes on to the
next batch while the device still works on this one, and the trainer reads the losses back at
the pace of its display.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from models import CausalNetwork
from sequnet_cli.captured_step import CapturedStep
from sequnet_cli.config import TrainConfig
from sequnet_cli.devices import autocast_dtype
from sequnet_cli.errors import DeviceError, warn
from sequnet_cli.tasks import Batch, Task


class TrainingStep:
    """Updates `network` (already on its device) from one batch at a time.

    With `config.ema > 0`, an exponential moving average of the weights is kept beside them
    (`averaged`); the trainer validates it beside the trained weights and keeps the better.
    """

    def __init__(
        self,
        network: CausalNetwork,
        task: Task,
        config: TrainConfig,
        capture: bool | None = None,
    ) -> None:
        """`capture`: replay the step as a CUDA graph; None decides from the config, the device
        and the task (a step that must talk to other processes passes False)."""
        self.network, self.task, self.config = network, task, config
        # What the batch goes through: the network itself, or a wrapper of it that also
        # exchanges gradients with other processes (`sequnet_cli.distributed`).
        self.forward_network: CausalNetwork = network
        self.device = next(network.parameters()).device
        self.autocast = autocast_dtype(self.device, config.precision)
        self.capture = captures(config, self.device, task) if capture is None else capture
        # A replayed graph needs a capturable optimizer; elsewhere it would only cost time.
        self.optimizer = make_optimizer(
            network, config.lr, config.weight_decay, capturable=self.capture
        )
        self.averaged = WeightAverage(network, config.ema) if config.ema > 0 else None
        self.graph: CapturedStep | None = None
        self._lr = config.lr

    def __call__(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """One optimizer step on `batch` (on the network's device); returns the summed loss
        (nats) and the number of predicted elements, as tensors on the device (reading them
        would wait for the step to finish)."""
        try:
            total, count = self._captured(batch) if self.capture else self._update(batch)
            if self.averaged is not None:
                self.averaged.update(self.network)
        except torch.OutOfMemoryError as error:
            raise DeviceError(
                f"out of memory at batch size {self.config.batch_size}; "
                "lower it with --set train.batch_size=N"
            ) from error
        return total, count

    def _update(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The step itself, in tensor operations only (so that it can be captured): returns the
        summed loss and the number of predicted elements, as tensors."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast_context():
            total = self.task.loss_sum(self.forward_network, batch)
        loss, total, count = self.objective(total, batch.mask.sum())
        loss.backward()
        if self.config.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.clip)
        self.optimizer.step()
        return total.detach(), count

    def autocast_context(self) -> torch.autocast:
        """The precision the step's forward pass and loss run in (`train.precision`)."""
        enabled = self.autocast is not None
        return torch.autocast(self.device.type, dtype=self.autocast, enabled=enabled)

    def objective(self, total: Tensor, count: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The loss to minimise from a batch's summed NLL over `count` predicted elements,
        with the summed NLL and the count it reports (a distributed step: of all processes)."""
        count = count.clamp(min=1)
        return (total if self.config.loss == "sum" else total / count), total, count

    def _captured(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Replay the captured step when `batch` has its shape; capture at the first batch."""
        if self.graph is None:
            try:
                self.graph = CapturedStep(self._update, self._tensors, batch)
            except RuntimeError as error:  # capture refused an operation, or its memory
                warn(
                    f"could not capture the training step as a CUDA graph ({error}); training "
                    "without capture (turn it off with --set train.capture=false)"
                )
                self.capture = False
                self._plain_optimizer()
                return self._update(batch)
        if self.graph.fits(batch):
            return self.graph(batch)
        return self._update(batch)  # another shape (e.g. a shorter last batch): eagerly

    def _tensors(self) -> list[Tensor]:
        """Every tensor a step changes: the weights and the optimizer's state."""
        state = [
            value
            for values in self.optimizer.state.values()
            for value in values.values()
            if isinstance(value, Tensor)
        ]
        return [*self.network.parameters(), *state]

    @property
    def lr(self) -> float:
        """The learning rate as set (a capturable optimizer holds it rounded to float32)."""
        return self._lr

    def set_lr(self, lr: float) -> None:
        """Change the learning rate (in place when a captured graph reads it from a tensor)."""
        self._lr = lr
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state dict with plain-number learning rates (what checkpoints store,
        whether or not this step captures)."""
        state = self.optimizer.state_dict()
        groups = [{**group, "lr": float(group["lr"])} for group in state["param_groups"]]
        return {**state, "param_groups": groups}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        """Restore `optimizer_state()`. Whether the optimizer is capturable is this step's
        choice, not the checkpoint's (a run saved on a CPU may resume on a GPU, and the other
        way round); a captured step keeps its learning-rate tensor."""
        lr = float(state["param_groups"][0]["lr"])
        tensors = [group["lr"] for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state)
        for group, tensor in zip(self.optimizer.param_groups, tensors, strict=True):
            group["capturable"] = self.capture
            if isinstance(tensor, Tensor):
                group["lr"] = tensor
        self.set_lr(lr)

    def _plain_optimizer(self) -> None:
        """The optimizer as a step that is never captured wants it: not capturable (which
        would only cost time, with a warning from PyTorch), its learning rate a number."""
        for group in self.optimizer.param_groups:
            group["capturable"] = False
            group["lr"] = self._lr


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


def captures(config: TrainConfig, device: torch.device, task: Task) -> bool:
    """Whether a step is replayed as a CUDA graph: on CUDA unless `train.capture` is off, for
    tasks whose batches all have one shape (others would capture a graph for every length)."""
    return config.capture and device.type == "cuda" and task.fixed_batch_shape


def make_optimizer(
    network: CausalNetwork, lr: float, weight_decay: float, capturable: bool = False
) -> torch.optim.Optimizer:
    """Adam, or AdamW when there is a weight decay (decoupled from the gradient, as AdamW does).

    `capturable`: the step may be replayed as a CUDA graph, so the learning rate lives in a
    tensor on the parameters' device.
    """
    # The fused kernels (CPU and CUDA) update all tensors in one pass: on a 2-core CPU, one JSB
    # step of Adam takes a third of the time of the default implementation.
    device = next(network.parameters()).device
    rate: float | Tensor = torch.tensor(lr, device=device) if capturable else lr
    parameters = network.parameters()
    if weight_decay == 0:
        return torch.optim.Adam(parameters, lr=rate, fused=True, capturable=capturable)
    return torch.optim.AdamW(
        parameters, lr=rate, weight_decay=weight_decay, fused=True, capturable=capturable
    )
