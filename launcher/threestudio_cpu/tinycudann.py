"""Stand-in for the ``tinycudann`` module (``import tinycudann as tcnn``), plain PyTorch.

Exposes what threestudio calls: ``Encoding``, ``Network``, ``NetworkWithInputEncoding`` and
``free_temporary_memory``, with tiny-cuda-nn's constructor signatures.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .tcnn_encodings import make_encoding
from .tcnn_network import MLP

STAND_IN = True  # tells the real package from this one


class Encoding(nn.Module):
    """``tcnn.Encoding(n_input_dims, encoding_config, seed=1337, dtype=None)``; float32 on CPU."""

    def __init__(self, n_input_dims: int, encoding_config: dict, seed: int = 1337, dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.encoding = make_encoding(n_input_dims, dict(encoding_config), seed)
        self.n_input_dims = n_input_dims
        self.n_output_dims = self.encoding.n_output_dims
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoding(x)


class Network(nn.Module):
    """``tcnn.Network(n_input_dims, n_output_dims, network_config, seed=1337)``."""

    def __init__(self, n_input_dims: int, n_output_dims: int, network_config: dict, seed: int = 1337):
        super().__init__()
        self.network = MLP(n_input_dims, n_output_dims, dict(network_config), seed)
        self.n_input_dims, self.n_output_dims = n_input_dims, n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class NetworkWithInputEncoding(nn.Module):
    """``tcnn.NetworkWithInputEncoding(n_input_dims, n_output_dims, encoding_config, network_config, seed=1337)``."""

    def __init__(self, n_input_dims: int, n_output_dims: int, encoding_config: dict, network_config: dict, seed: int = 1337):
        super().__init__()
        self.encoding = Encoding(n_input_dims, encoding_config, seed)
        self.network = Network(self.encoding.n_output_dims, n_output_dims, network_config, seed)
        self.n_input_dims, self.n_output_dims = n_input_dims, n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.encoding(x))


def free_temporary_memory() -> None:
    """Nothing to free: the stand-in keeps no scratch buffers."""
