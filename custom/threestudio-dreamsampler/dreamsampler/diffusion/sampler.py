"""DreamSampler's reverse-schedule noise bookkeeping (main paper Alg. 2, eq. 5, 12, 14).

One object follows a descending list of timesteps ``t_0 > t_1 > ... > t_{N-1}`` and, at every
index ``i``, forward-noises the generator's current clean latent with the noise the diffusion
model *estimated* at the previous index instead of fresh Gaussian noise (Alg. 2, lines 3-5):

    sigma_i = eta * sqrt((1 - a_i) / (1 - a_j)) * sqrt(1 - a_j / a_i)          (DDIM's eta * beta_t)
    eps~_i  = (sqrt(1 - a_i - sigma_i^2) * eps^_j + sigma_i * e) / sqrt(1 - a_i)   (eq. 5)
    z_i     = sqrt(a_i) * z0 + sqrt(1 - a_i) * eps~_i                                (eq. 12)
    z0^_i   = (z_i - sqrt(1 - a_i) * eps^_i) / sqrt(a_i)                             (eq. 14, Tweedie)

where ``a_i = alphas_cumprod[t_i]`` and ``j`` is the last index at which a prediction was stored
(``j = i - 1`` in plain sampling). With an identity generator solved exactly (``z0 <- z0^`` after
every step) the z_i are exactly DDIM's iterates (tested against diffusers' ``DDIMScheduler``).

Noise memory can be kept per *view key* (e.g. a camera index) so a fixed multi-view data set reuses
each view's own previous prediction; ``key=None`` keeps one memory for the whole batch.
Several calls at the same index (several optimizer steps per timestep) reuse the same eps~_i; the
last prediction stored at index ``i`` is the one carried to the next index.
"""
from __future__ import annotations

from typing import Dict, Hashable, List, Optional, Sequence, Union

import torch
from torch import Tensor

from .process import Latent, carried_noise, ddim_sigma, forward_noise, scalar_like, tweedie
from .schedules import ReverseSchedule

Key = Optional[Union[Hashable, Sequence[Hashable]]]


class DreamSampler:
    """Reverse-schedule sampler with carried noise; see the module docstring for the equations.

    Args:
        alphas_cumprod: ``[T]`` cumulative products abar_t of the diffusion model's schedule.
        timesteps: descending (non-increasing) integer timesteps ``t_0 >= ... >= t_{N-1}``.
        eta: DDIM stochasticity in [0, 1]; 0 is deterministic (only the carried prediction).
    """

    def __init__(self, alphas_cumprod: Tensor, timesteps, eta: float = 0.0):
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got eta={eta}")
        self.schedule = ReverseSchedule(alphas_cumprod, timesteps, strict=False)
        self.eta = float(eta)
        # per key: {"eps": prediction, "idx": index it was stored at,
        #           "prev_eps"/"prev_idx": the prediction carried into the current index,
        #           "tilde"/"tilde_idx": eps~ already drawn for an index}
        self._memory: Dict[Hashable, Dict[str, object]] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def timesteps(self) -> Tensor:
        return self.schedule.timesteps

    def __len__(self) -> int:
        return len(self.schedule)

    def alpha_bar(self, i: int, like: Tensor) -> Tensor:
        """abar at ``t_i`` as a 0-d tensor on ``like``'s device and dtype."""
        return scalar_like(self.schedule.alpha(i), like)

    def _check_index(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"step index {i} outside [0, {len(self) - 1}]")
        return i

    @staticmethod
    def _split(x: Tensor, key: Key) -> List[tuple]:
        """Pairs (key, slice of x): the whole batch under one key, or one sample per key."""
        if key is None or isinstance(key, (str, int)) and not isinstance(key, bool):
            return [(key, x)]
        keys = list(key.tolist() if isinstance(key, Tensor) else key)
        if len(keys) != x.shape[0]:
            raise ValueError(f"got {len(keys)} view keys for a batch of {x.shape[0]}")
        return [(k, x[b : b + 1]) for b, k in enumerate(keys)]

    # ------------------------------------------------------------- the contract
    def add_noise(
        self,
        z0: Latent,
        i: int,
        generator: Optional[torch.Generator] = None,
        noise: Optional[Latent] = None,
        key: Key = None,
    ) -> Latent:
        """Forward-noise the clean estimate ``z0`` at index ``i`` with the carried noise (eq. 5, 12)."""
        i = self._check_index(i)
        a_i = self.alpha_bar(i, z0)
        tildes = []
        offset = 0
        for k, part in self._split(z0, key):
            fresh = None if noise is None else noise[offset : offset + part.shape[0]]
            offset += part.shape[0]
            tildes.append(self._carried_noise(k, part, i, generator, fresh))
        eps_tilde = torch.cat(tildes) if len(tildes) > 1 else tildes[0]
        return forward_noise(z0, eps_tilde, a_i)

    def step(self, z_t: Latent, eps_hat: Latent, i: int, key: Key = None, carry: Optional[Latent] = None) -> Latent:
        """Tweedie's estimate z0^ at index ``i`` (eq. 14); remembers ``carry`` (default ``eps_hat``, as
        Alg. 2; the unconditional prediction as Alg. 3 and 4 carry) for the next index."""
        i = self._check_index(i)
        a_i = self.alpha_bar(i, z_t)
        eps_hat = eps_hat.detach()
        carry = eps_hat if carry is None else carry.detach()
        for k, part in self._split(carry, key):
            mem = self._memory.setdefault(k, {})
            if mem.get("idx") is not None and int(mem["idx"]) < i:
                mem["prev_eps"], mem["prev_idx"] = mem["eps"], mem["idx"]
            mem["eps"], mem["idx"] = part.clone(), i
        return tweedie(z_t, eps_hat, a_i)

    def noise_tilde(self, i: int, key: Key = None) -> Tensor:
        """The eps~ used by the last ``add_noise`` at index ``i`` (for the SDS-form gradient)."""
        parts = []
        for k in ([key] if key is None or isinstance(key, (str, int)) else list(
            key.tolist() if isinstance(key, Tensor) else key
        )):
            mem = self._memory.get(k, {})
            if mem.get("tilde_idx") != i:
                raise RuntimeError(f"no noise drawn at index {i} for view key {k!r}; call add_noise first")
            parts.append(mem["tilde"])
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _carried_noise(self, k, z0: Latent, i: int, generator, fresh: Optional[Tensor]) -> Latent:
        mem = self._memory.setdefault(k, {})
        if mem.get("tilde_idx") == i and fresh is None and mem["tilde"].shape == z0.shape:
            return mem["tilde"].to(z0)  # another optimizer step at the same timestep
        # the prediction carried into index i: stored at an earlier index j < i
        if mem.get("idx") is not None and int(mem["idx"]) < i:
            eps_prev, j = mem["eps"], int(mem["idx"])
        elif mem.get("prev_idx") is not None and int(mem["prev_idx"]) < i:
            eps_prev, j = mem["prev_eps"], int(mem["prev_idx"])
        else:
            eps_prev, j = None, None
        if eps_prev is not None and eps_prev.shape != z0.shape:
            eps_prev = None  # resolution or batch changed: start this view afresh
        if eps_prev is None:
            e = fresh if fresh is not None else _randn_like(z0, generator)
            tilde = e.to(z0)
        else:
            a_i, a_j = self.alpha_bar(i, z0), self.alpha_bar(j, z0)
            e = None
            if self.eta > 0:
                e = fresh if fresh is not None else _randn_like(z0, generator)
            tilde = carried_noise(eps_prev.to(z0), a_i, ddim_sigma(a_j, a_i, self.eta, z0), e)
        mem["tilde"], mem["tilde_idx"] = tilde.detach(), i
        return mem["tilde"]

    # -------------------------------------------------------------- checkpoints
    def state_dict(self) -> Dict[str, object]:
        """Position and carried noise: everything needed to resume bit-for-bit."""
        return {
            "timesteps": self.timesteps.clone(),
            "eta": self.eta,
            "memory": {
                k: {n: (v.detach().cpu().clone() if isinstance(v, Tensor) else v) for n, v in m.items()}
                for k, m in self._memory.items()
            },
        }

    def load_state_dict(self, state: Dict[str, object]) -> None:
        ts = torch.as_tensor(state["timesteps"], dtype=torch.long)
        if ts.shape != self.timesteps.shape or not torch.equal(ts, self.timesteps):
            raise ValueError(
                "the saved DreamSampler state follows a different timestep schedule "
                f"({ts.numel()} steps from {int(ts[0])} to {int(ts[-1])}); "
                "resume with the same trainer.max_steps and schedule settings"
            )
        self.eta = float(state["eta"])
        self._memory = {k: dict(m) for k, m in state["memory"].items()}


def _randn_like(x: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
