"""CPU paths for the nerfacc 0.5 ops that threestudio's NeRF volume renderer calls.

nerfacc's packed scans, ``pack_info`` and ``OccGridEstimator`` ray marching are CUDA kernels that
raise "Only support cuda inputs" on CPU tensors. :func:`patch` wraps them so that CPU tensors take
the torch implementations below and CUDA tensors still take nerfacc's kernels:

- packed inclusive / exclusive sums and products: per-ray scans on a padded [rays, samples] view
  (exact per ray, differentiable); ``render_weight_from_density`` & co. use them unchanged;
- ``OccGridEstimator.sampling``: constant steps of ``render_step_size`` through the estimator's
  box (nerfacc's own pure-torch ray/box intersection), then nerfacc's visibility filtering;
  the occupancy grid is not consulted (no empty-space skipping);
- ``OccGridEstimator.update_every_n_steps``: nothing to update, since sampling ignores the grid.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

_PATCHED = "_threestudio_cpu_original"


def pack_info(ray_indices: Tensor, n_rays: Optional[int] = None) -> Tensor:
    """[n_rays, 2] (start, count) of each ray's run in sorted ``ray_indices``."""
    if n_rays is None:
        n_rays = int(ray_indices.max().item()) + 1 if ray_indices.numel() else 0
    counts = torch.bincount(ray_indices.long(), minlength=n_rays)[:n_rays].to(ray_indices.dtype)
    starts = counts.cumsum(0, dtype=ray_indices.dtype) - counts
    return torch.stack([starts, counts], -1)


def _layout(packed_info: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """For each packed sample: its ray, its slot along the ray, and its index in the flat tensor."""
    starts, counts = packed_info.long().unbind(-1)
    rays = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    slots = torch.arange(len(rays), device=counts.device) - (counts.cumsum(0) - counts)[rays]
    return rays, slots, starts[rays] + slots


def _packed_scan(inputs: Tensor, packed_info: Tensor, op: str, exclusive: bool) -> Tensor:
    """Per-ray cumulative sum / product of a flat tensor, on a padded [rays, samples] view."""
    assert inputs.dim() == 1, "inputs must be flattened."
    identity = 0.0 if op == "sum" else 1.0
    rays, slots, index = _layout(packed_info)
    width = int(slots.max().item()) + 1 if len(slots) else 0
    grid = inputs.new_full((len(packed_info), width), identity).index_put((rays, slots), inputs[index])
    if exclusive:
        grid = torch.cat([grid.new_full((grid.shape[0], 1), identity), grid[:, :-1]], -1)
    scanned = grid.cumsum(-1) if op == "sum" else grid.cumprod(-1)
    return inputs.new_zeros(inputs.shape).index_put((index,), scanned[rays, slots])


def _on_cpu(cuda_op: Callable, op: str, exclusive: bool) -> Callable:
    @functools.wraps(cuda_op)
    def scan(inputs: Tensor, packed_info: Optional[Tensor] = None) -> Tensor:
        if packed_info is None or inputs.is_cuda:
            return cuda_op(inputs, packed_info)
        return _packed_scan(inputs, packed_info, op, exclusive)

    setattr(scan, _PATCHED, cuda_op)
    return scan


def _pack_info_on_cpu(cuda_op: Callable) -> Callable:
    @functools.wraps(cuda_op)
    def wrapped(ray_indices: Tensor, n_rays: Optional[int] = None) -> Tensor:
        return cuda_op(ray_indices, n_rays) if ray_indices.is_cuda else pack_info(ray_indices, n_rays)

    setattr(wrapped, _PATCHED, cuda_op)
    return wrapped


@torch.no_grad()
def uniform_sampling(
    estimator,
    rays_o: Tensor,
    rays_d: Tensor,
    sigma_fn: Optional[Callable] = None,
    alpha_fn: Optional[Callable] = None,
    near_plane: float = 0.0,
    far_plane: float = 1e10,
    t_min: Optional[Tensor] = None,
    t_max: Optional[Tensor] = None,
    render_step_size: float = 1e-3,
    early_stop_eps: float = 1e-4,
    alpha_thre: float = 0.0,
    stratified: bool = False,
    cone_angle: float = 0.0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``OccGridEstimator.sampling`` on CPU: (ray_indices, t_starts, t_ends), packed by ray."""
    from nerfacc.grid import _ray_aabb_intersect
    from nerfacc.volrend import render_visibility_from_alpha, render_visibility_from_density

    if cone_angle != 0.0:
        raise ValueError("the CPU OccGridEstimator.sampling supports constant steps only (cone_angle=0)")
    box = estimator.aabbs[-1:].to(rays_o)  # the outermost level's box
    t_in, t_out, hit = _ray_aabb_intersect(rays_o, rays_d, box, near_plane, far_plane, miss_value=0.0)
    near, far = t_in[:, 0], t_out[:, 0]
    if t_min is not None:
        near = torch.maximum(near, t_min)
    if t_max is not None:
        far = torch.minimum(far, t_max)
    if stratified:
        near = near + torch.rand_like(near) * render_step_size
    counts = torch.ceil((far - near) / render_step_size).clamp_min(0).long()
    counts = torch.where(hit[:, 0], counts, torch.zeros_like(counts))
    ray_indices = torch.repeat_interleave(torch.arange(len(counts), device=rays_o.device), counts)
    packed = torch.stack([counts.cumsum(0) - counts, counts], -1)
    steps = torch.arange(len(ray_indices), device=rays_o.device) - packed[ray_indices, 0]
    t_starts = near[ray_indices] + steps * render_step_size
    t_ends = torch.minimum(t_starts + render_step_size, far[ray_indices])

    if (alpha_thre > 0.0 or early_stop_eps > 0.0) and (sigma_fn is not None or alpha_fn is not None):
        alpha_thre = min(alpha_thre, estimator.occs.mean().item())
        if sigma_fn is not None:
            sigmas = sigma_fn(t_starts, t_ends, ray_indices) if len(t_starts) else t_starts.new_empty(0)
            keep = render_visibility_from_density(
                t_starts=t_starts, t_ends=t_ends, sigmas=sigmas, packed_info=packed,
                early_stop_eps=early_stop_eps, alpha_thre=alpha_thre,
            )
        else:
            alphas = alpha_fn(t_starts, t_ends, ray_indices) if len(t_starts) else t_starts.new_empty(0)
            keep = render_visibility_from_alpha(
                alphas=alphas, packed_info=packed, early_stop_eps=early_stop_eps, alpha_thre=alpha_thre
            )
        ray_indices, t_starts, t_ends = ray_indices[keep], t_starts[keep], t_ends[keep]
    return ray_indices, t_starts, t_ends


def _sampling_on_cpu(cuda_sampling: Callable) -> Callable:
    @functools.wraps(cuda_sampling)
    def sampling(self, rays_o: Tensor, rays_d: Tensor, *args, **kwargs):
        if rays_o.is_cuda:
            return cuda_sampling(self, rays_o, rays_d, *args, **kwargs)
        return uniform_sampling(self, rays_o, rays_d, *args, **kwargs)

    setattr(sampling, _PATCHED, cuda_sampling)
    return sampling


def _update_on_cpu(cuda_update: Callable) -> Callable:
    @functools.wraps(cuda_update)
    def update_every_n_steps(self, *args, **kwargs):
        if self.binaries.is_cuda:
            return cuda_update(self, *args, **kwargs)
        return None  # the CPU sampling does not consult the occupancy grid

    setattr(update_every_n_steps, _PATCHED, cuda_update)
    return update_every_n_steps


def patch() -> None:
    """Route nerfacc's CUDA-only ops to the torch paths above for CPU tensors (idempotent)."""
    import nerfacc
    import nerfacc.pack
    import nerfacc.scan
    import nerfacc.volrend
    from nerfacc.estimators.occ_grid import OccGridEstimator

    if hasattr(nerfacc.scan.exclusive_sum, _PATCHED):
        return
    scans = {
        "inclusive_sum": ("sum", False),
        "exclusive_sum": ("sum", True),
        "inclusive_prod": ("prod", False),
        "exclusive_prod": ("prod", True),
    }
    for name, (op, exclusive) in scans.items():
        wrapped = _on_cpu(getattr(nerfacc.scan, name), op, exclusive)
        for module in (nerfacc.scan, nerfacc.volrend, nerfacc):
            if hasattr(module, name):
                setattr(module, name, wrapped)
    wrapped_pack = _pack_info_on_cpu(nerfacc.pack.pack_info)
    for module in (nerfacc.pack, nerfacc.volrend, nerfacc):
        module.pack_info = wrapped_pack
    OccGridEstimator.sampling = _sampling_on_cpu(OccGridEstimator.sampling)
    OccGridEstimator.update_every_n_steps = _update_on_cpu(OccGridEstimator.update_every_n_steps)
