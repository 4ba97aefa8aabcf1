"""``dreamsampler-multiview-datamodule``: N degraded views y = A(x) of one object, their cameras, a caption.

Input (see :mod:`dreamsampler.multiview.views`): a folder with a NeRF-synthetic ``transforms.json``, or only
images on the fixed 16-view ring at elevation 30 degrees; ``operator``, the A that produced them (or,
with ``apply_operator``, that is applied here to the clean views of the folder, which then serve as
ground truth); optionally ``gt_root``, clean views for evaluation, and ``heldout_root``, clean views
from other cameras (a ``transforms.json`` folder at the render size) that training never sees. ``dataroot=procedural`` takes the
project's procedural scene instead (:mod:`dreamsampler.multiview.procedural`, ``procedural_size`` pixels, on the
ring), degraded here, with its clean views as ground truth. Renders have the operator's input size
for the measurement size (e.g. k times the measurement for down-sampling by k).

Batches (threestudio's keys plus ``measurement`` [1, h, w, 3] on data views and ``data_index``):
- train: step s draws, from a generator seeded by (seed, s), a data view, or after
  ``novel_view_start_step`` with probability ``novel_view_prob`` one of the fixed novel cameras between
  neighbouring data views (``cameras.novel_c2w``). ``index`` is the camera's key for per-view carried
  noise: 0..N-1 data views, N.. novel views. Batches depend on the step only, so a resumed run gets
  the batches the uninterrupted run got.
- val: ``n_val_views`` data views; test: all N data views (metrics), the held-out views (metrics,
  ``data_index`` -1 and ``heldout_index`` k), then a 360-degree orbit (video).
"""
import math
from dataclasses import dataclass, field

import pytorch_lightning as pl
import threestudio
import torch
from threestudio.utils.config import parse_structured
from threestudio.utils.ops import get_mvp_matrix, get_projection_matrix
from threestudio.utils.typing import *
from torch.utils.data import DataLoader, Dataset, IterableDataset

from dreamsampler.image_io import bhwc
from dreamsampler.inverse.operators import build_operator
from dreamsampler.multiview.cameras import look_at, novel_c2w, orbit_positions, rays, spherical
from dreamsampler.multiview.procedural import scene_views
from dreamsampler.multiview.views import RingSpec, Views, check_ground_truth, load_views
from dreamsampler.world.scenes import object_scene_views

PROCEDURAL = "procedural"
WORLD = "world:"  # world:<index>: held-out world object <index> on the world's ring, with 8 held-out views


def built_in_scene(dataroot: str) -> bool:
    return dataroot == PROCEDURAL or str(dataroot).startswith(WORLD)


def world_index(dataroot: str) -> int:
    index = dataroot[len(WORLD):]
    if not index.isdigit():
        raise ValueError(f"data.dataroot={dataroot!r}: a world scene is {WORLD}<index>, e.g. {WORLD}5 (a red sphere)")
    return int(index)


@dataclass
class DegradedMultiviewDataModuleConfig:
    dataroot: str = ""  # folder of degraded views (clean views with apply_operator), "procedural" or "world:<index>"
    procedural_size: int = 64  # image size of a built-in scene (procedural, world:<index>)
    caption: str = ""  # the text condition c_y (system.prompt_processor.prompt: ${data.caption})
    operator: dict = field(default_factory=dict)  # e.g. {"type": "blur", "kernel_size": 5, "sigma": 10.0}
    apply_operator: bool = False  # y = A(views of dataroot); those views become the ground truth
    gt_root: Optional[str] = None  # clean views for PSNR / SSIM / LPIPS
    heldout_root: Optional[str] = None  # clean views from cameras not trained on (transforms.json), scored at test
    cameras: str = "auto"  # auto | transforms | ring
    ring_views: int = 16
    ring_elevation_deg: float = 30.0
    ring_distance: float = 1.5
    ring_fovy_deg: float = 49.1
    background_color: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    novel_view_prob: float = 0.5
    novel_views_per_pair: int = 1
    novel_view_start_step: int = 0  # ${system.warmup_steps}: data views only during the warm-up
    n_val_views: int = 4
    n_test_orbit_views: int = 120
    seed: int = 0  # ${seed}
    rays_d_normalize: bool = True


def check_config(cfg: DegradedMultiviewDataModuleConfig):
    """The fields' values, checked before anything is loaded; returns the operator A."""
    if not isinstance(cfg.caption, str) or not cfg.caption.strip():
        raise ValueError("data.caption is missing: give the text that describes the views, e.g. data.caption=\"a red chair\"")
    if not cfg.dataroot:
        raise ValueError("data.dataroot is missing: the folder of views (transforms.json + images, or images only)")
    if str(cfg.dataroot).startswith(WORLD):
        world_index(cfg.dataroot)
    try:
        return build_operator(dict(cfg.operator))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"data.operator={dict(cfg.operator)} is invalid: {exc}") from exc


class DegradedViews:
    """The loaded, checked data shared by the three splits."""

    def __init__(self, cfg: DegradedMultiviewDataModuleConfig) -> None:
        self.operator = check_config(cfg)
        ring = RingSpec(cfg.ring_views, cfg.ring_elevation_deg, cfg.ring_distance, cfg.ring_fovy_deg)
        procedural = built_in_scene(cfg.dataroot)
        world_heldout = None
        if procedural:
            if cfg.gt_root:
                raise ValueError(
                    f"data.gt_root={cfg.gt_root} is not used with data.dataroot={cfg.dataroot}: "
                    "a built-in scene's clean views are its ground truth"
                )
            if cfg.dataroot == PROCEDURAL:
                views = scene_views(cfg.procedural_size, ring)
            else:
                views, world_heldout, _ = object_scene_views(world_index(cfg.dataroot), cfg.procedural_size)
        else:
            views = load_views(cfg.dataroot, cfg.cameras, ring, cfg.background_color)
        self.c2w = views.c2w
        self.gt: Optional[Tensor] = None
        if cfg.apply_operator or procedural:
            self.gt = bhwc(views.images)
            gen = torch.Generator().manual_seed(cfg.seed)
            with torch.no_grad():
                y = self.operator.measure(views.images, generator=gen)
            self.measurements = bhwc(y).clamp(0, 1)
            self.height, self.width = views.height, views.width
            self.focal = views.focal
        else:
            self.measurements = bhwc(views.images)
            self.height, self.width = self.operator.input_size(views.height, views.width)
            self.focal = views.focal * self.width / views.width
        if cfg.gt_root:
            gt = load_views(cfg.gt_root, cfg.cameras, ring, cfg.background_color)
            check_ground_truth(views, gt, (self.height, self.width))
            self.gt = bhwc(gt.images)
        self.heldout: Optional[Views] = world_heldout
        if cfg.heldout_root:
            self.heldout = load_views(cfg.heldout_root, "transforms", ring, cfg.background_color)
            if (self.heldout.height, self.heldout.width, round(self.heldout.focal, 3)) != (self.height, self.width, round(self.focal, 3)):
                raise ValueError(
                    f"data.heldout_root: views are {self.heldout.width}x{self.heldout.height} with focal "
                    f"{self.heldout.focal:.3f} but renders are {self.width}x{self.height} with focal {self.focal:.3f}; "
                    f"see {self.heldout.files[0]}"
                )
        self.n_data = self.c2w.shape[0]
        self.novel = novel_c2w(self.c2w, cfg.novel_views_per_pair)
        self.fovy = 2 * math.atan(0.5 * self.height / self.focal)
        threestudio.info(
            f"degraded views: {self.n_data} data views {tuple(self.measurements.shape[1:3])} -> renders "
            f"{self.height}x{self.width}, {self.novel.shape[0]} novel views, ground truth: {self.gt is not None}"
        )

    def camera_batch(self, c2w: Tensor) -> Dict[str, Any]:
        """threestudio's camera keys for cameras ``c2w`` [B, 4, 4] at the render size."""
        rays_o, rays_d = rays(c2w, self.height, self.width, self.focal, normalize=True)
        elevation, azimuth, distance = spherical(c2w)
        fovy = torch.full((c2w.shape[0],), self.fovy)
        proj = get_projection_matrix(fovy, self.width / self.height, 0.01, 100.0)
        return {
            "rays_o": rays_o,
            "rays_d": rays_d,
            "c2w": c2w,
            "mvp_mtx": get_mvp_matrix(c2w, proj),
            "proj_mtx": proj,
            "camera_positions": c2w[:, :3, 3],
            "light_positions": c2w[:, :3, 3],
            "elevation": elevation,
            "azimuth": azimuth,
            "camera_distances": distance,
            "fovy": fovy,
            "height": self.height,
            "width": self.width,
        }

    def data_view(self, i: int, key: int) -> Dict[str, Any]:
        batch = self.camera_batch(self.c2w[i : i + 1])
        batch.update(index=torch.tensor([key]), data_index=torch.tensor([i]), measurement=self.measurements[i : i + 1])
        if self.gt is not None:
            batch["gt_rgb"] = self.gt[i : i + 1]
        return batch


class TrainViews(IterableDataset):
    def __init__(self, views: DegradedViews, cfg: DegradedMultiviewDataModuleConfig, start_step: int) -> None:
        self.views, self.cfg, self.start_step = views, cfg, start_step

    def batch_at(self, step: int) -> Dict[str, Any]:
        v = self.views
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        if (
            step >= self.cfg.novel_view_start_step
            and v.novel.shape[0] > 0
            and float(torch.rand((), generator=gen)) < self.cfg.novel_view_prob
        ):
            m = int(torch.randint(v.novel.shape[0], (), generator=gen))
            batch = v.camera_batch(v.novel[m : m + 1])
            batch.update(index=torch.tensor([v.n_data + m]), data_index=torch.tensor([-1]))
            return batch
        i = int(torch.randint(v.n_data, (), generator=gen))
        return v.data_view(i, i)

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.batch_at(step)
            step += 1


class EvalViews(Dataset):
    """Data views (indices), then the held-out views (when ``heldout``), then an orbit of ``n_orbit`` cameras
    at the data's mean elevation / distance."""

    def __init__(self, views: DegradedViews, indices: List[int], n_orbit: int, heldout: bool = False) -> None:
        self.views, self.indices = views, indices
        self.heldout = views.heldout if heldout and views.heldout is not None else None
        self.n_heldout = 0 if self.heldout is None else self.heldout.n
        elevation, _, distance = spherical(views.c2w)
        az = torch.linspace(0.0, 360.0, n_orbit) if n_orbit > 0 else torch.zeros(0)
        pos = orbit_positions(torch.full_like(az, float(elevation.mean())), az, torch.full_like(az, float(distance.mean())))
        self.orbit = look_at(pos) if n_orbit > 0 else torch.zeros(0, 4, 4)

    def __len__(self) -> int:
        return len(self.indices) + self.n_heldout + self.orbit.shape[0]

    def __getitem__(self, k: int) -> Dict[str, Any]:
        n = len(self.indices)
        if k < n:
            batch = self.views.data_view(self.indices[k], k)
        elif k < n + self.n_heldout:
            h = k - n
            batch = self.views.camera_batch(self.heldout.c2w[h : h + 1])
            batch.update(data_index=torch.tensor([-1]), heldout_index=torch.tensor([h]),
                         gt_rgb=bhwc(self.heldout.images[h : h + 1]))
        else:
            o = k - n - self.n_heldout
            batch = self.views.camera_batch(self.orbit[o : o + 1])
            batch.update(data_index=torch.tensor([-1]))
        batch["index"] = torch.tensor([k])
        return batch


@threestudio.register("dreamsampler-multiview-datamodule")
class DegradedMultiviewDataModule(pl.LightningDataModule):
    Config = DegradedMultiviewDataModuleConfig
    check_config = staticmethod(check_config)
    cfg: DegradedMultiviewDataModuleConfig

    def __init__(self, cfg: Optional[Union[dict, DictConfig]] = None) -> None:
        super().__init__()
        self.cfg = parse_structured(DegradedMultiviewDataModuleConfig, cfg)
        self.views: Optional[DegradedViews] = None

    def setup(self, stage=None) -> None:
        if self.views is None:
            self.views = DegradedViews(self.cfg)

    def _loader(self, dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        # the loader is built after a checkpoint is restored: start at the restored step
        start = self.trainer.global_step if self.trainer is not None else 0
        return self._loader(TrainViews(self.views, self.cfg, start))

    def val_dataloader(self) -> DataLoader:
        n = self.views.n_data
        k = max(1, min(self.cfg.n_val_views, n))
        indices = sorted({round(j * n / k) % n for j in range(k)})
        return self._loader(EvalViews(self.views, indices, 0))

    def test_dataloader(self) -> DataLoader:
        return self._loader(EvalViews(self.views, list(range(self.views.n_data)), self.cfg.n_test_orbit_views, heldout=True))

    def predict_dataloader(self) -> DataLoader:
        return self._loader(EvalViews(self.views, [], self.cfg.n_test_orbit_views))
