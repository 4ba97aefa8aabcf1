"""tiny-cuda-nn's input encodings in plain PyTorch: Grid (Hash / Dense / Tiled), Frequency,
SphericalHarmonics, Identity.

Same config keys, defaults and output widths as tiny-cuda-nn (its DOCUMENTATION.md and
``encodings/grid.h``); level resolutions, hashing and table sizes follow ``grid.h``. Parameters are
float32 and trainable; gradients (including second order, for analytic normals) come from autograd.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

# tiny-cuda-nn's fast_hash primes (grid.h); 1 for the first dimension keeps memory coherent.
HASH_PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
GRID_TYPES = {"grid": None, "hashgrid": "Hash", "densegrid": "Dense", "tiledgrid": "Tiled"}


def _flatten(x: torch.Tensor, n_input_dims: int) -> torch.Tensor:
    if x.shape[-1] != n_input_dims:
        raise ValueError(f"encoding expects inputs with {n_input_dims} dims, got shape {tuple(x.shape)}")
    return x.reshape(-1, n_input_dims).float()


class GridEncoding(nn.Module):
    """Multiresolution grid (instant-NGP): per level, N-linear interpolation of a feature table."""

    def __init__(self, n_input_dims: int, config: dict, seed: int = 1337):
        super().__init__()
        otype = config.get("otype", "Grid")
        default_type = GRID_TYPES[otype.lower()] or "Hash"
        self.grid_type = config.get("type", default_type).capitalize()
        if self.grid_type == "Tile":
            self.grid_type = "Tiled"
        if self.grid_type not in ("Hash", "Dense", "Tiled"):
            raise ValueError(f"encoding.type={config.get('type')!r}: choose Hash, Dense or Tiled")
        if n_input_dims > len(HASH_PRIMES):
            raise ValueError(f"grid encodings take at most {len(HASH_PRIMES)} input dims, got {n_input_dims}")
        self.interpolation = config.get("interpolation", "Linear")
        if self.interpolation not in ("Linear", "Nearest", "Smoothstep"):
            raise ValueError(f"encoding.interpolation={self.interpolation!r}: choose Linear, Nearest or Smoothstep")
        self.n_input_dims = n_input_dims
        self.n_levels = int(config.get("n_levels", 16))
        self.n_features_per_level = int(config.get("n_features_per_level", 2))
        if self.n_features_per_level not in (1, 2, 4, 8):
            raise ValueError("encoding.n_features_per_level must be 1, 2, 4 or 8")
        self.log2_hashmap_size = int(config.get("log2_hashmap_size", 19))
        self.base_resolution = int(config.get("base_resolution", 16))
        self.per_level_scale = float(config.get("per_level_scale", 2.0))
        self.n_output_dims = self.n_levels * self.n_features_per_level

        scales, resolutions, sizes = [], [], []
        for level in range(self.n_levels):
            scale = 2.0 ** (level * math.log2(self.per_level_scale)) * self.base_resolution - 1.0
            resolution = int(math.ceil(scale)) + 1
            size = -(-resolution**n_input_dims // 8) * 8  # dense size, rounded up to a multiple of 8
            if self.grid_type == "Hash":
                size = min(size, 2**self.log2_hashmap_size)
            elif self.grid_type == "Tiled":
                size = min(size, self.base_resolution**n_input_dims)
            scales.append(scale)
            resolutions.append(resolution)
            sizes.append(size)
        self.sizes = sizes
        generator = torch.Generator().manual_seed(seed)
        init = torch.rand(sum(sizes) * self.n_features_per_level, generator=generator) * 2e-4 - 1e-4
        self.params = nn.Parameter(init)  # one flat table, level after level, like tiny-cuda-nn

        # grid.h's grid_index, per level: strides of the dense index (0 past the table size), and
        # whether the level hashes instead
        strides, hashed = [], []
        for resolution, size in zip(resolutions, sizes):
            stride, level_strides = 1, []
            for _ in range(n_input_dims):
                level_strides.append(stride if stride <= size else 0)
                if stride <= size:
                    stride *= resolution
            strides.append(level_strides)
            hashed.append(self.grid_type == "Hash" and size < stride)
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32), persistent=False)
        self.register_buffer("strides", torch.tensor(strides, dtype=torch.long), persistent=False)
        self.register_buffer("hashed", torch.tensor(hashed), persistent=False)
        self.register_buffer("level_sizes", torch.tensor(sizes, dtype=torch.long), persistent=False)
        self.register_buffer("offsets", torch.tensor([sum(sizes[:i]) for i in range(self.n_levels)]), persistent=False)
        self.register_buffer("primes", torch.tensor(HASH_PRIMES[:n_input_dims], dtype=torch.long), persistent=False)
        corners = torch.tensor([[(c >> d) & 1 for d in range(n_input_dims)] for c in range(2**n_input_dims)])
        self.register_buffer("corners", corners, persistent=False)

    def _rows(self, coords: torch.Tensor) -> torch.Tensor:
        """Table rows of integer grid coordinates [N, L, ..., d], level l at dim 1."""
        shape = (1, self.n_levels) + (1,) * (coords.dim() - 3)
        dense = (coords * self.strides.view(*shape, self.n_input_dims)).sum(-1)
        hashed = torch.zeros_like(dense)
        for dim in range(self.n_input_dims):
            hashed = hashed ^ ((coords[..., dim] * self.primes[dim]) & 0xFFFFFFFF)
        index = torch.where(self.hashed.view(shape), hashed, dense)
        return index % self.level_sizes.view(shape) + self.offsets.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = _flatten(x, self.n_input_dims)
        table = self.params.view(-1, self.n_features_per_level)
        pos = x[:, None, :] * self.scales[:, None] + 0.5  # [N, L, d]
        pos_grid = torch.floor(pos)
        frac = pos - pos_grid
        if self.interpolation == "Smoothstep":
            frac = frac * frac * (3.0 - 2.0 * frac)
        pos_grid = pos_grid.long()
        if self.interpolation == "Nearest":
            out = table.index_select(0, self._rows(pos_grid).reshape(-1))
        else:
            rows = self._rows(pos_grid[:, :, None, :] + self.corners)  # [N, L, 2^d]
            weights = 1.0
            for dim in range(self.n_input_dims):  # products, not .prod(): its backward is slow on CPU
                f = frac[:, :, dim : dim + 1]
                weights = weights * torch.where(self.corners[:, dim].bool(), f, 1.0 - f)
            values = table.index_select(0, rows.reshape(-1)).view(*rows.shape, self.n_features_per_level)
            out = torch.einsum("nlc,nlcf->nlf", weights, values)
        return out.reshape(*lead, self.n_output_dims)


class FrequencyEncoding(nn.Module):
    """NeRF's sin/cos encoding; output ``[dim][frequency][sin, cos]`` of ``sin(2^k pi x + phase)``."""

    def __init__(self, n_input_dims: int, config: dict):
        super().__init__()
        self.n_input_dims = n_input_dims
        self.n_frequencies = int(config.get("n_frequencies", 12))
        self.n_output_dims = n_input_dims * self.n_frequencies * 2
        self.register_buffer("bands", 2.0 ** torch.arange(self.n_frequencies) * math.pi, persistent=False)
        self.register_buffer("phases", torch.tensor([0.0, math.pi / 2]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = _flatten(x, self.n_input_dims)
        angles = x[:, :, None, None] * self.bands[:, None] + self.phases  # [N, d, K, 2]
        return torch.sin(angles).view(*lead, self.n_output_dims)


def _sh_basis(x, y, z, degree: int):
    """Real spherical harmonics up to ``degree`` (degree^2 functions), tiny-cuda-nn's sign convention."""
    xy, yz, xz, x2, y2, z2 = x * y, y * z, x * z, x * x, y * y, z * z
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        out += [
            1.0925484305920792 * xy,
            -1.0925484305920792 * yz,
            0.94617469575755997 * z2 - 0.31539156525251999,
            -1.0925484305920792 * xz,
            0.54627421529603959 * x2 - 0.54627421529603959 * y2,
        ]
    if degree > 3:
        out += [
            0.59004358992664352 * y * (-3.0 * x2 + y2),
            2.8906114426405538 * xy * z,
            0.45704579946446572 * y * (1.0 - 5.0 * z2),
            0.3731763325901154 * z * (5.0 * z2 - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * z2),
            1.4453057213202769 * z * (x2 - y2),
            0.59004358992664352 * x * (-x2 + 3.0 * y2),
        ]
    return torch.stack(out, -1)


class SphericalHarmonicsEncoding(nn.Module):
    """Real SH of a unit direction given in the unit cube as ``(v + 1) / 2``; degree <= 4 here."""

    MAX_DEGREE = 4

    def __init__(self, n_input_dims: int, config: dict):
        super().__init__()
        if n_input_dims != 3:
            raise ValueError(f"SphericalHarmonics encodes 3D directions, got n_input_dims={n_input_dims}")
        self.degree = int(config.get("degree", 4))
        if not 1 <= self.degree <= self.MAX_DEGREE:
            raise ValueError(
                f"encoding.degree={self.degree}: the CPU stand-in implements SphericalHarmonics degrees 1..{self.MAX_DEGREE}"
            )
        self.n_input_dims = 3
        self.n_output_dims = self.degree**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        v = _flatten(x, 3) * 2.0 - 1.0
        return _sh_basis(v[:, 0], v[:, 1], v[:, 2], self.degree).view(*lead, self.n_output_dims)


class IdentityEncoding(nn.Module):
    """``x * scale + offset``."""

    def __init__(self, n_input_dims: int, config: dict):
        super().__init__()
        self.n_input_dims = self.n_output_dims = n_input_dims
        self.scale = float(config.get("scale", 1.0))
        self.offset = float(config.get("offset", 0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return (_flatten(x, self.n_input_dims) * self.scale + self.offset).view(*lead, self.n_output_dims)


def make_encoding(n_input_dims: int, config: dict, seed: int = 1337) -> nn.Module:
    """The encoding named by ``config["otype"]``; a clear error for those not stood in for."""
    otype = config.get("otype")
    if otype is None:
        raise ValueError(f"encoding config {config} has no 'otype'")
    key = otype.lower()
    if key in GRID_TYPES:
        return GridEncoding(n_input_dims, config, seed)
    if key == "frequency":
        return FrequencyEncoding(n_input_dims, config)
    if key == "sphericalharmonics":
        return SphericalHarmonicsEncoding(n_input_dims, config)
    if key == "identity":
        return IdentityEncoding(n_input_dims, config)
    raise ValueError(
        f"encoding otype={otype!r} has no CPU stand-in (threestudio_cpu covers Grid/HashGrid/DenseGrid/"
        "TiledGrid, Frequency, SphericalHarmonics, Identity); run on a GPU with tinycudann installed"
    )
