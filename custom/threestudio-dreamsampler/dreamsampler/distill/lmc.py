"""Learned manifold corrective of LMC-SDS (Alldieck, Kolotouros, Sminchisescu 2024, "Score Distillation
Sampling with Learned Manifold Corrective", arXiv:2401.05293). Equation numbers below are the paper's;
the formulas are written out here as this module implements them.

With CFG ``eps_w = eps_u + s (eps_c - eps_u)`` (eq. 4-5) the SDS gradient on the image/latent z splits
into (eq. 6)

    L_cond = w(t) s (eps_c - eps_u)                          prompt agreement
    L_proj = w(t) (eps_u - eps)                              towards the manifold
           = w(t) sqrt(a / (1 - a)) (z - x^)                 (eq. 7), x^ = Tweedie(z_t, eps_u)

since x^ = z + sqrt((1 - a) / a) (eps - eps_u). The denoiser is modelled as x^ = b_t(pi(z_t)), a
projection onto the manifold followed by a time-dependent frequency bias b_t (eq. 8). A small
network k_psi(z, t) ~ b_t, trained to regress x^ from clean (near-)natural z, cancels the bias by
replacing z with k_psi(z, t) in eq. 7 (eq. 9):

    L_lmc = c(t) (k_psi(z, t) - x^)

Normalized space (eq. 10): k_psi is trained on ``N(x^) = (x^ - mu(x^)) / sigma(x^)`` (per sample),
so it predicts structure, not global statistics. "The same normalisation absorbed into k_psi" in
eq. 9 means k_psi's output is mapped back with the target's own statistics:

    L_lmc = c(t) (sigma(x^) k_psi(z, t) + mu(x^) - x^) = c(t) sigma(x^) (k_psi(z, t) - N(x^))

which keeps L_lmc in z's units (so ``c`` has the same meaning as in eq. 7) and leaves the mean and
contrast of z to L_cond, the drift in image statistics the paper normalizes away.

Scale ``c(t)``: by default ``w(t) sqrt(a / (1 - a))``, the factor eq. 7 carries into eq. 9, so with
k = identity and no normalization ``L_cond + L_lmc`` *is* the SDS gradient ``L_cond + L_proj``
(tested). The paper then drops the factor (``manifold_weight=1``), which is exactly what the
``tweedie`` weighting w = sqrt((1 - a) / a) yields by default.

Fixed noise (sec. 4, "Increasing sample diversity"): draw eps once per run and use it only inside
L_lmc (pass ``z_t_fixed`` / ``eps_uncond_fixed``), while L_cond keeps fresh noise.

k_psi (sec. 4 and supp. A): a U-Net, two Conv/ReLU per level then MaxPool, ``base_channels``
filters doubling per level, skip connections, a final linear Conv; t enters as a 10-d frequency
encoding concatenated to every pixel. Checkpoints are safetensors files whose metadata holds the
architecture: nothing is ever unpickled.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..diffusion.process import forward_noise, tweedie

CHECKPOINT_FORMAT = "dreamsampler-lmc-corrective"
CHECKPOINT_VERSION = "1"

Corrective = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- the network
def timestep_encoding(t: Tensor, num_train_timesteps: int = 1000, dim: int = 10) -> Tensor:
    """Frequency encoding of t/T: [sin(2^k pi t/T), cos(2^k pi t/T)], k < dim/2 -> [B, dim]."""
    if dim % 2:
        raise ValueError(f"the timestep encoding needs an even dimension, got {dim}")
    tau = t.to(torch.float32).flatten()[:, None] / num_train_timesteps
    freqs = math.pi * 2.0 ** torch.arange(dim // 2, dtype=torch.float32, device=tau.device)
    return torch.cat([torch.sin(tau * freqs), torch.cos(tau * freqs)], dim=1)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True),
    )


class CorrectiveUNet(nn.Module):
    """k_psi(x, t): U-Net regressing the normalized one-step denoised x^ (LMC-SDS sec. 4, supp. A).

    Args:
        in_channels: channels of x (4 for Stable Diffusion latents, 3 for pixels).
        base_channels: filters of the first level (paper: 32), doubled at every level.
        depth: encoder levels (paper: 4, i.e. nine levels with the bottleneck and the decoder).
        time_dim: size of the frequency encoding of t (paper: 10).
        num_train_timesteps: T of the diffusion model, to encode t / T.
    Inputs of any height/width: they are padded (replicate) to a multiple of 2^depth and cropped back.
    """

    def __init__(self, in_channels: int = 4, base_channels: int = 32, depth: int = 4,
                 time_dim: int = 10, num_train_timesteps: int = 1000):
        super().__init__()
        if in_channels < 1 or base_channels < 1 or depth < 1 or time_dim < 2 or num_train_timesteps < 1:
            raise ValueError(
                "CorrectiveUNet needs in_channels, base_channels, depth >= 1, time_dim >= 2 and "
                f"num_train_timesteps >= 1; got {in_channels}, {base_channels}, {depth}, {time_dim}, {num_train_timesteps}"
            )
        self.config = dict(in_channels=int(in_channels), base_channels=int(base_channels), depth=int(depth),
                           time_dim=int(time_dim), num_train_timesteps=int(num_train_timesteps))
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels + time_dim
        for w in widths[:-1]:
            self.down.append(_block(cin, w))
            cin = w
        self.bottleneck = _block(widths[-2], widths[-1])
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth)))
        self.up = nn.ModuleList(_block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.out = nn.Conv2d(widths[0], in_channels, 1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        b, _, h, w = x.shape
        t = torch.as_tensor(t, device=x.device).flatten()
        if t.numel() == 1:
            t = t.expand(b)
        emb = timestep_encoding(t, self.config["num_train_timesteps"], self.config["time_dim"]).to(x.dtype)
        m = 2 ** self.config["depth"]
        ph, pw = (-h) % m, (-w) % m
        h_ = torch.cat([x, emb[:, :, None, None].expand(b, -1, h, w)], dim=1)
        if ph or pw:
            h_ = F.pad(h_, (0, pw, 0, ph), mode="replicate")
        skips = []
        for block in self.down:
            h_ = block(h_)
            skips.append(h_)
            h_ = F.max_pool2d(h_, 2)
        h_ = self.bottleneck(h_)
        for upsample, block in zip(self.upsample, self.up):
            h_ = block(torch.cat([upsample(h_), skips.pop()], dim=1))
        return self.out(h_)[:, :, :h, :w]


# ------------------------------------------------------------------------------ the loss
def _per_sample(v, like: Tensor) -> Tensor:
    """A scalar or per-sample [B] value broadcast against ``like``."""
    v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    if v.dim() == 1 and like.dim() > 1:
        v = v.view(-1, *([1] * (like.dim() - 1)))
    return v


def normalize(x: Tensor, eps: float = 1e-6) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-sample (x - mu) / sigma over all non-batch dims (eq. 10); returns (N(x), mu, sigma)."""
    dims = tuple(range(1, x.dim()))
    mu = x.mean(dims, keepdim=True)
    sigma = x.std(dims, keepdim=True, unbiased=False).clamp_min(eps)
    return (x - mu) / sigma, mu, sigma


def one_step_denoised(eps_fn: Callable[[Tensor, Tensor], Tensor], z0: Tensor, t: Tensor,
                      alpha_bar: Tensor, noise: Tensor) -> Tensor:
    """x^ = Tweedie(z_t, eps_u(z_t, t)) with z_t = sqrt(a) z0 + sqrt(1 - a) noise (eq. 1, 7)."""
    a = _per_sample(alpha_bar, z0)
    z_t = forward_noise(z0, noise, a)
    return tweedie(z_t, eps_fn(z_t, t), a)


def corrective_loss(k: Corrective, z0: Tensor, t: Tensor, x_hat: Tensor, normalize_target: bool = True) -> Tensor:
    """Training loss of k_psi: mean ||k(z0, t) - N(x^)||^2 (eq. 10; N = identity when not normalizing)."""
    target = normalize(x_hat)[0] if normalize_target else x_hat
    return F.mse_loss(k(z0, t), target.detach())


def manifold_residual(k: Corrective, z: Tensor, t: Tensor, x_hat: Tensor, normalize_target: bool = True) -> Tensor:
    """The bracket of eq. 9: sigma(x^) k(z, t) + mu(x^) - x^ (or k(z, t) - x^ without normalization)."""
    with torch.no_grad():  # eq. 9 omits k's Jacobian, like the denoiser's (eq. 3)
        kz = k(z.detach(), t)
    if not normalize_target:
        return kz - x_hat
    _, mu, sigma = normalize(x_hat)
    return sigma * kz + mu - x_hat


def lmc_gradient(
    k: Corrective,
    z: Tensor,
    t: Tensor,
    alpha_bar: Tensor,
    z_t: Tensor,
    eps_cond: Tensor,
    eps_uncond: Tensor,
    scale,
    weight,
    *,
    normalize_target: bool = True,
    manifold_weight=None,
    z_t_fixed: Optional[Tensor] = None,
    eps_uncond_fixed: Optional[Tensor] = None,
) -> Tensor:
    """Gradient of LMC-SDS on z: L_cond + L_lmc (eq. 6c, 9); see the module docstring.

    Args:
        k: the corrective k_psi(z, t) (a :class:`CorrectiveUNet` or any callable).
        z: the clean image/latent being optimised; t: [B] timesteps; alpha_bar: abar_t, broadcastable.
        z_t, eps_cond, eps_uncond: noised z and the conditional / unconditional predictions on it.
        scale: CFG scale s (float or [B]); weight: w(t) (float or broadcastable tensor).
        normalize_target: compare in the normalized space of eq. 10 (the trained k's space).
        manifold_weight: c(t) of L_lmc; None = w(t) sqrt(a / (1 - a)) (eq. 7 -> 9), 1.0 = the paper's.
        z_t_fixed, eps_uncond_fixed: fixed-noise option: z noised with eps drawn once per run and the
            unconditional prediction on it; used for x^ inside L_lmc only.
    Returns the gradient, shaped like z (use with ``distill.surrogate_loss``).
    """
    if (z_t_fixed is None) != (eps_uncond_fixed is None):
        raise ValueError("the fixed-noise option needs both z_t_fixed and eps_uncond_fixed")
    a = _per_sample(alpha_bar, z)
    w = _per_sample(weight, z)
    l_cond = w * _per_sample(scale, z) * (eps_cond - eps_uncond)
    if z_t_fixed is None:
        x_hat = tweedie(z_t, eps_uncond, a)
    else:
        x_hat = tweedie(z_t_fixed, eps_uncond_fixed, a)
    c = w * torch.sqrt(a / (1 - a)) if manifold_weight is None else _per_sample(manifold_weight, z)
    return l_cond + c * manifold_residual(k, z, t, x_hat, normalize_target)


class FixedNoise:
    """The fixed-noise option's eps: drawn once per run from ``seed`` (one draw per shape, cached).

    The draw depends only on (seed, shape), so resuming needs only the seed (``state_dict``). For a
    batch of views that share one eps, draw the shape [1, C, H, W] and broadcast it over the batch.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self._noise: Dict[Tuple[int, ...], Tensor] = {}

    def __call__(self, shape, device=None, dtype=torch.float32) -> Tensor:
        shape = tuple(int(s) for s in shape)
        if shape not in self._noise:
            g = torch.Generator().manual_seed(self.seed)
            self._noise[shape] = torch.randn(shape, generator=g, dtype=torch.float64)
        return self._noise[shape].to(device=device, dtype=dtype)

    def state_dict(self) -> Dict[str, int]:
        return {"seed": self.seed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.seed = int(state["seed"])
        self._noise.clear()


# -------------------------------------------------------------------------- training
def train_corrective(
    k: nn.Module,
    eps_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Iterator[Tuple[Tensor, Tensor, Tensor]],
    alphas_cumprod: Tensor,
    steps: int,
    lr: float = 1e-4,
    normalize_target: bool = True,
    callback: Optional[Callable[[int, float], None]] = None,
) -> List[float]:
    """Fit k_psi with Adam on eq. 10; ``batches`` yields (z0, t [B], noise), ``eps_fn(z_t, t)`` is the
    unconditional noise prediction. Returns the loss of every step (``callback(step, loss)`` too)."""
    opt = torch.optim.Adam(k.parameters(), lr=lr)
    losses = []
    k.train()
    for step in range(int(steps)):
        z0, t, noise = next(batches)
        with torch.no_grad():
            x_hat = one_step_denoised(eps_fn, z0, t, alphas_cumprod.to(z0)[t], noise)
        loss = corrective_loss(k, z0, t, x_hat, normalize_target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if callback is not None:
            callback(step, losses[-1])
    k.eval()
    return losses


# ------------------------------------------------------------------------- checkpoints
def save_corrective(k: CorrectiveUNet, path: Union[str, Path], info: Optional[Dict[str, object]] = None) -> Path:
    """Write k's weights and architecture (and ``info``, e.g. the model it was trained on) as safetensors."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": json.dumps(k.config),
            "info": json.dumps(info or {})}
    save_file({n: p.detach().cpu().contiguous() for n, p in k.state_dict().items()}, str(path), metadata=meta)
    return path


def load_corrective(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> CorrectiveUNet:
    """Rebuild k_psi from a :func:`save_corrective` file (``k.info`` holds the saved ``info``); clear
    errors naming the file when it is missing or malformed."""
    from safetensors import SafetensorError, safe_open

    path = Path(path).expanduser()
    hint = "train one with `python scripts/train_lmc.py --model ... --out corrective.safetensors`"
    if not path.is_file():
        raise FileNotFoundError(f"LMC corrective checkpoint not found: {path} ({hint})")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {n: f.get_tensor(n) for n in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable safetensors file (an LMC corrective checkpoint is one): {e}") from e
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an LMC corrective checkpoint (metadata format={meta.get('format')!r}); {hint}")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has LMC checkpoint version {meta.get('version')!r}; this code reads {CHECKPOINT_VERSION!r}")
    try:
        k = CorrectiveUNet(**json.loads(meta["config"]))
        k.load_state_dict(tensors, strict=True)
        k.info = json.loads(meta.get("info", "{}"))  # e.g. {"model": ...}: what x^ came from
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: malformed metadata, or weights that do not match its architecture: {e}") from e
    return k.to(device).eval().requires_grad_(False)

