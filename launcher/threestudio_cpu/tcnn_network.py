"""tiny-cuda-nn's MLPs (FullyFusedMLP, CutlassMLP) in plain PyTorch.

Same config keys and defaults as tiny-cuda-nn's DOCUMENTATION.md: ``n_hidden_layers`` hidden layers
of ``n_neurons`` with ``activation``, then a linear output layer with ``output_activation``; no
biases, like tiny-cuda-nn. Weights are float32, initialised Xavier-uniform from ``seed``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

NETWORK_TYPES = ("FullyFusedMLP", "CutlassMLP", "VanillaMLP")
ACTIVATIONS = {
    "None": lambda x: x,
    "ReLU": F.relu,
    "LeakyReLU": lambda x: F.leaky_relu(x, 0.01),
    "Exponential": torch.exp,
    "Sine": torch.sin,
    "Sigmoid": torch.sigmoid,
    "Squareplus": lambda x: 0.5 * (x + torch.sqrt(x * x + 4.0)),
    "Softplus": F.softplus,
    "Tanh": torch.tanh,
}


def _activation(config: dict, key: str, default: str):
    name = config.get(key, default)
    if name not in ACTIVATIONS:
        raise ValueError(f"network.{key}={name!r} is unknown; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Bias-free MLP configured like tiny-cuda-nn's fully-fused / CUTLASS networks."""

    def __init__(self, n_input_dims: int, n_output_dims: int, config: dict, seed: int = 1337):
        super().__init__()
        otype = config.get("otype")
        if otype not in NETWORK_TYPES:
            raise ValueError(
                f"network otype={otype!r} has no CPU stand-in (threestudio_cpu covers {', '.join(NETWORK_TYPES)})"
            )
        self.n_input_dims, self.n_output_dims = n_input_dims, n_output_dims
        n_neurons = int(config.get("n_neurons", 128))
        n_hidden = int(config.get("n_hidden_layers", 5))
        self.activation = _activation(config, "activation", "ReLU")
        self.output_activation = _activation(config, "output_activation", "None")
        widths = [n_input_dims] + [n_neurons] * n_hidden + [n_output_dims]
        generator = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            self.weights.append(nn.Parameter((torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        for i, weight in enumerate(self.weights):
            x = F.linear(x, weight)
            x = self.activation(x) if i < len(self.weights) - 1 else self.output_activation(x)
        return x
