"""Batch norm folded into the convolution before it, for the duration of an attack.

In eval mode a ``BatchNorm`` layer is a fixed affine map per channel,
:math:`\\gamma (z - \\mu) / \\sqrt{\\sigma^2 + \\varepsilon} + \\beta`; after a convolution it can be
folded into that convolution's weights and bias. The model computes the same function (to float
rounding, about 1e-6 on the logits of the course's CNNs) with one layer less in every forward
and backward pass: 10-13% of a gradient step on ``digits-cnn`` and ``signs-cnn``.

Only pairs that are plainly equivalent are folded: a ``Conv1d/2d/3d`` followed directly by the
``BatchNorm`` of the same dimension inside a plain :class:`torch.nn.Sequential`, neither with
hooks or parametrizations, the batch norm with running statistics. Nothing is folded in a
model with global module hooks, a compiled network or a (Distributed)DataParallel wrapper. The
model's own modules are put back when the block ends, whatever happens inside it; the folded
weights are new tensors, so the model's parameters are never written.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator
from typing import cast

from torch import Tensor, nn
from torch.nn.modules import module as _module
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["folded_batch_norm"]

_PAIRS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: nn.BatchNorm1d,
    nn.Conv2d: nn.BatchNorm2d,
    nn.Conv3d: nn.BatchNorm3d,
}


def _plain(m: nn.Module) -> bool:
    """No hooks and no parametrization: the module's forward is only its own computation."""
    hooks = (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)
    return not any(hooks) and not parametrize.is_parametrized(m)


def _global_hooks() -> bool:
    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks")
    return any(getattr(_module, name, None) for name in names)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        _PAIRS.get(type(conv)) is type(bn)
        and not bn.training
        and bn.running_mean is not None
        and bn.running_var is not None
        and _plain(conv)
        and _plain(bn)
    )


def _fold(conv: _ConvNd, bn: _BatchNorm) -> nn.Module:
    """A shallow copy of ``conv`` whose weight and bias include ``bn`` (the originals untouched)."""
    fused = copy.copy(conv)
    fused._parameters = dict(conv._parameters)  # the copy's own table: the originals stay
    mean, var = cast(Tensor, bn.running_mean), cast(Tensor, bn.running_var)  # see _foldable
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, mean, var, bn.eps, bn.weight, bn.bias)
    fused.weight, fused.bias = weight, bias
    return fused


@contextlib.contextmanager
def folded_batch_norm(model: nn.Module) -> Iterator[int]:
    """Fold every eval-mode batch norm that follows a convolution in ``model`` for the block;
    yields how many were folded (0 when the model has none, or nothing is safe to fold).

    Call it with the model already in eval mode; the block must not train the model.
    """
    modules = list(model.modules())
    if _global_hooks() or any(
        isinstance(m, nn.DataParallel | nn.parallel.DistributedDataParallel)
        or getattr(m, "_compiled_call_impl", None) is not None
        for m in modules
    ):
        yield 0
        return
    swaps: list[tuple[nn.Sequential, str, nn.Module, str, nn.Module]] = []
    try:
        for seq in modules:
            if type(seq) is not nn.Sequential or not _plain(seq):
                continue
            items = list(seq._modules.items())
            for (conv_name, conv), (bn_name, bn) in itertools.pairwise(items):
                if conv is None or bn is None or not _foldable(conv, bn):
                    continue
                seq._modules[conv_name] = _fold(cast(_ConvNd, conv), cast(_BatchNorm, bn))
                seq._modules[bn_name] = nn.Identity()
                swaps.append((seq, conv_name, conv, bn_name, bn))
        yield len(swaps)
    finally:
        for seq, conv_name, conv, bn_name, bn in reversed(swaps):
            seq._modules[conv_name] = conv
            seq._modules[bn_name] = bn
