"""Training a sparse backbone towards sparse activations: an L1 or Hoyer-square penalty on the
features after every activation of the backbone, added to the detector's loss.

Config (``model.backbone_3d.activation_penalty``)::

    activation_penalty: {type: hoyer_square, weight: 1.0}     # or type: l1; absent / null: off

- ``l1``: mean |x| over every element of every activation output of the backbone in the batch
  (:func:`backbones.activation_sparsity.l1_activation_penalty`); scale-dependent.
- ``hoyer_square``: per activation output |x|_1^2 / (n |x|_2^2), averaged over the outputs
  (:func:`backbones.activation_sparsity.hoyer_square_penalty` with ``per_element=True``): scale-
  invariant, in [1/n, 1]; about 0.32 for ReLU of a standard normal. Per element so that one weight
  means the same at any grid size and depth (DeepHoyer's unnormalised sum grows with n).

"After the activation" is what the densification meter measures: the output of each activation
module (ReLU, k-WTA, …, :data:`backbones.activation_sparsity.ACTIVATIONS`) in the backbone, i.e.
after BatchNorm, or after a residual block's addition. The weighted penalty is logged as the loss
``activation_penalty`` and added to ``loss``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backbones.activation_sparsity import ACTIVATIONS, hoyer_square_penalty, l1_activation_penalty

PENALTIES = {
    "l1": l1_activation_penalty,
    "hoyer_square": lambda activations: hoyer_square_penalty(activations, per_element=True),
}


@dataclass
class ActivationPenaltyConfig:
    type: str                        # one of PENALTIES
    weight: float                    # multiplies the penalty in the loss; >= 0

    def __post_init__(self):
        if self.type not in PENALTIES:
            raise ValueError(f"activation_penalty.type must be one of {sorted(PENALTIES)}, got {self.type!r}")
        if not self.weight >= 0:
            raise ValueError(f"activation_penalty.weight must be >= 0, got {self.weight!r}")


class ActivationPenalty:
    """Collects the activation outputs of ``backbone`` during each training forward (forward hooks;
    nothing is kept in eval mode or without autograd) and turns them into the weighted penalty.

    Not an nn.Module on purpose: it holds no parameters, and registering the backbone a second time
    would duplicate its keys in the detector's state_dict.
    """

    def __init__(self, backbone: nn.Module, config: ActivationPenaltyConfig):
        self.config = config
        self.penalty = PENALTIES[config.type]
        self.activations: list[torch.Tensor] = []
        self._hooks = [backbone.register_forward_pre_hook(self._clear)]
        self._hooks += [module.register_forward_hook(self._collect) for module in backbone.modules()
                        if isinstance(module, ACTIVATIONS)]
        if len(self._hooks) == 1:
            raise ValueError(f"{type(backbone).__name__} has no activation module to penalise")

    def _clear(self, module, inputs) -> None:
        self.activations = []

    def _collect(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        if module.training and torch.is_grad_enabled() and output.numel():
            self.activations.append(output)

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def add_to(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``losses`` with ``activation_penalty`` (weighted) added, and added to ``loss``. Needs the
        activations of a training forward since the last one."""
        if not self.activations:
            raise RuntimeError("activation penalty: no activations recorded; the loss needs a training-mode "
                               "forward with autograd enabled first")
        # In float32: under autocast the activations may be half precision, whose squared sums overflow.
        penalty = self.config.weight * self.penalty([a.float() for a in self.activations])
        self.activations = []
        return {**losses, "activation_penalty": penalty, "loss": losses["loss"] + penalty}
