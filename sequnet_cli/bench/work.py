"""The arithmetic a network does, counted from the operations it dispatches (no timing).

Bench compares each measured time with the work behind it, and the estimate sizes its
calibration with it. A `WorkCounter` sees every aten operation run under it and adds the
multiply-adds of the convolutions (forward and backward) and matrix products; everything else
(gates, additions, concatenations, the loss's softmax, the optimizer) is counted as operations
only, since its arithmetic is a few per element, not a few hundred.

- Training: one forward pass and loss of the network on the measured batch, then its backward
  pass, both on the meta device (shapes only, nothing computed). Each convolution's backward
  computes the gradient of its weight and, except where its input needs none (the network's
  input), of its input, each as many multiply-adds as its forward: a training step is about 3x
  its forward.
- Generation: the multiply-adds of a stream's steps over whole clock cycles (a Seq-U-Net's
  level i runs every 2**i steps), divided by the elements generated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from models import CausalNetwork
from sequnet_cli.config import RunConfig
from sequnet_cli.tasks import Batch, Task, task_for

_ATEN = torch.ops.aten
# Matrix products, by overload packet (so `mm.out` and `addmm_` count too): the positions of
# their two factors among the arguments.
_PRODUCTS = {
    _ATEN.mm: (0, 1),
    _ATEN.bmm: (0, 1),
    _ATEN.mv: (0, 1),
    _ATEN.addmm: (1, 2),
    _ATEN.addmm_: (1, 2),
    _ATEN.baddbmm: (1, 2),
    _ATEN.baddbmm_: (1, 2),
    _ATEN.addmv: (1, 2),
    _ATEN.addmv_: (1, 2),
}


@dataclass(frozen=True)
class Work:
    """What one forward pass and loss of a network does on one batch."""

    operations: int  # tensor operations dispatched
    multiply_adds: int  # of its convolutions and matrix products
    parameters: int


@dataclass(frozen=True)
class TrainingWork:
    """The multiply-adds of one training step: its forward pass and loss, and the whole step
    (forward and backward; the optimizer's few per weight are left out)."""

    forward: int
    training: int


class WorkCounter(TorchDispatchMode):
    """Counts every dispatched operation, and the multiply-adds of convolutions (forward and
    backward) and matrix products."""

    def __init__(self) -> None:
        super().__init__()
        self.operations = 0
        self.multiply_adds = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        self.operations += 1
        self.multiply_adds += _multiply_adds(func, args, out)
        return out


def _multiply_adds(func: Any, args: tuple[Any, ...], out: Any) -> int:
    if func is _ATEN.convolution.default:
        x, weight, transposed = args[0], args[1], args[6]
        return _convolution(x, out, weight, transposed)
    if func is _ATEN.convolution_backward.default:
        # (grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
        #  output_padding, groups, output_mask): each of the input's and the weight's gradients
        #  is one pass of the forward's size
        grad_output, x, weight, transposed, mask = args[0], args[1], args[2], args[7], args[10]
        return _convolution(x, grad_output, weight, transposed) * (int(mask[0]) + int(mask[1]))
    factors = _PRODUCTS.get(func.overloadpacket)
    if factors is not None:
        a, b = args[factors[0]], args[factors[1]]  # (…, n, k) @ (…, k, m): n·k·m per matrix
        return a.numel() * (b.shape[-1] if b.dim() > 1 else 1)
    return 0


def _convolution(x: torch.Tensor, out: torch.Tensor, weight: torch.Tensor, transposed: bool) -> int:
    per_output = weight.shape[1] * math.prod(weight.shape[2:])  # in/groups x kernel
    # a transposed convolution spreads each input over the kernel instead
    return (x if transposed else out).numel() * per_output


def count_work(config: RunConfig, batch_size: int, targets: int) -> Work:
    """The work of one forward pass and loss of `config`'s network on a random batch of
    `batch_size` examples with `targets` predicted elements (counted on the meta device)."""
    task, network, batch = _on_meta(config, batch_size, targets)
    counter = WorkCounter()
    with counter, torch.no_grad():
        task.loss_sum(network, batch)
    parameters = sum(parameter.numel() for parameter in network.parameters())
    return Work(counter.operations, counter.multiply_adds, parameters)


def count_training_work(config: RunConfig, batch_size: int, targets: int) -> TrainingWork:
    """The multiply-adds of one training step of `config`'s network (see the module) on a
    random batch of `batch_size` examples with `targets` predicted elements."""
    task, network, batch = _on_meta(config, batch_size, targets)
    counter = WorkCounter()
    with counter:
        loss = task.loss_sum(network, batch)
        forward = counter.multiply_adds
        loss.backward()
    return TrainingWork(forward, counter.multiply_adds)


def _on_meta(config: RunConfig, batch_size: int, targets: int) -> tuple[Task, CausalNetwork, Batch]:
    """`config`'s task, its network and a random batch of `batch_size` examples with `targets`
    predicted elements, on the meta device: shapes only, nothing computed."""
    task = task_for(config)
    with torch.device("meta"):
        network = task.build_network()
        generator = torch.Generator().manual_seed(0)
        batch = task.random_batch(batch_size, targets, network.receptive_field, generator)
    return task, network, batch
