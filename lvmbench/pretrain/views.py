"""Two augmented views per image, with the crop box each was cut from.

LVM-Med uses VICRegL's augmentations (reference §3.1 step 1): random resized crops, horizontal flip
(p = 0.5), colour jitter, Gaussian blur, normalisation. The graph has one node per view, so
exactly two views are made (VICRegL's extra small local crops would have no node to attach to).
Probabilities follow VICRegL/BYOL's asymmetric recipe (blur 1.0 / 0.1, solarisation 0 / 0.2,
jitter 0.8, greyscale 0.2); the crop scale range (0.25, 1) is our choice — the paper gives none —
wide enough to vary views, narrow enough that two views of an image usually overlap, which the
location-matched local term needs.

Randomness comes from a generator seeded by (seed, epoch, index), so a sample's views do not
depend on which data-loader worker makes them, and a resumed run makes the same views.
Views stay uint8 until the trainer normalises them on the device (4× less to move between
processes than float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field, Strict, ValidationError, model_validator
from torchvision.transforms.v2 import functional as TF

from lvmbench.errors import UserError
from lvmbench.kit import Fraction01, PosFloat, StrictModel, first_problem

Pair01 = tuple[Fraction01, Fraction01]
PosPair = tuple[PosFloat, PosFloat]


@dataclass(frozen=True)
class ViewConfig:
    size: int = 224
    scale: tuple[float, float] = (0.25, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # at 224 px; scaled with ``size``
    solarize_p: tuple[float, float] = (0.0, 0.2)


class ViewOptions(StrictModel):
    """What ``--view KEY=VALUE`` may change (every key of ``ViewConfig`` but the size)."""

    scale: Pair01 = Field((0.25, 1.0), description="random resized crop: area range, fractions of the image")
    ratio: PosPair = Field((3 / 4, 4 / 3), description="crop aspect-ratio range")
    flip_p: Fraction01 = 0.5
    jitter_p: Fraction01 = Field(0.8, description="probability of colour jitter")
    brightness: Fraction01 = 0.4
    contrast: Fraction01 = 0.4
    saturation: Fraction01 = 0.2
    hue: Annotated[float, Strict(), Field(ge=0, le=0.5, allow_inf_nan=False)] = 0.1
    gray_p: Fraction01 = Field(0.2, description="probability of greyscale")
    blur_p: Pair01 = Field((1.0, 0.1), description="Gaussian blur probability of view 1, view 2")
    blur_sigma: PosPair = Field((0.1, 2.0), description="blur sigma range at 224 px (scaled with the view size)")
    solarize_p: Pair01 = Field((0.0, 0.2), description="solarisation probability of view 1, view 2")

    @model_validator(mode="after")
    def _ranges(self) -> "ViewOptions":
        for name in ("scale", "ratio", "blur_sigma"):
            lo, hi = getattr(self, name)
            if lo > hi or (name == "scale" and lo == 0):
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {list(getattr(self, name))}")
        return self


def view_config(size: int, options: dict[str, Any]) -> ViewConfig:
    """The views of a run: the defaults above with ``--view`` options, validated (one line for a
    bad key or value)."""
    try:
        opts = ViewOptions.model_validate(options)
    except ValidationError as e:
        p = first_problem(e, ViewOptions)
        msg = f"unknown --view key '{p.key}'" + (f"; did you mean '{p.hint}'?" if p.hint else "") if p.kind == "unknown" else f"--view {p.key}: {p.text}{p.shown}".replace("--view : ", "--view: ")
        raise UserError(msg, fix=f"keys: {', '.join(ViewOptions.model_fields)}; pairs as JSON, e.g. --view 'scale=[0.5, 1]' --view jitter_p=0.3") from None
    return ViewConfig(size=size, **{k: tuple(v) if isinstance(v, tuple) else v for k, v in opts.model_dump().items()})


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """Independent stream per (seed, epoch, index) (SeedSequence mixes the three properly)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def _u(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def crop_box(h: int, w: int, cfg: ViewConfig, gen: torch.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop parameters (top, left, height, width), torchvision's rejection scheme
    with a centre-crop fallback, drawn from ``gen``."""
    area = h * w
    log_r = (math.log(cfg.ratio[0]), math.log(cfg.ratio[1]))
    for _ in range(10):
        target = area * _u(gen, *cfg.scale)
        aspect = math.exp(_u(gen, *log_r))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (), generator=gen))
            left = int(torch.randint(0, w - cw + 1, (), generator=gen))
            return top, left, ch, cw
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def _color(img: torch.Tensor, cfg: ViewConfig, gen: torch.Generator) -> torch.Tensor:
    if _u(gen) < cfg.jitter_p:
        ops = [
            lambda x: TF.adjust_brightness(x, _u(gen, 1 - cfg.brightness, 1 + cfg.brightness)),
            lambda x: TF.adjust_contrast(x, _u(gen, 1 - cfg.contrast, 1 + cfg.contrast)),
            lambda x: TF.adjust_saturation(x, _u(gen, 1 - cfg.saturation, 1 + cfg.saturation)),
            lambda x: TF.adjust_hue(x, _u(gen, -cfg.hue, cfg.hue)),
        ]
        for k in torch.randperm(4, generator=gen).tolist():
            img = ops[k](img)
    if _u(gen) < cfg.gray_p:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    return img


def make_view(img: torch.Tensor, cfg: ViewConfig, gen: torch.Generator, which: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One view of a (3, H, W) uint8 image -> ((3, size, size) uint8, box (4,) normalised x1 y1 x2 y2,
    x1 > x2 when flipped)."""
    _, h, w = img.shape
    top, left, ch, cw = crop_box(h, w, cfg, gen)
    out = TF.resized_crop(img, top, left, ch, cw, [cfg.size, cfg.size], antialias=True)
    box = torch.tensor([left / w, top / h, (left + cw) / w, (top + ch) / h], dtype=torch.float32)
    if _u(gen) < cfg.flip_p:
        out = TF.horizontal_flip(out)
        box = box[[2, 1, 0, 3]]
    out = _color(out, cfg, gen)
    if _u(gen) < cfg.blur_p[which]:
        sigma = _u(gen, *cfg.blur_sigma) * cfg.size / 224
        k = max(3, 2 * math.ceil(3 * sigma) + 1)
        out = TF.gaussian_blur(out, [k, k], [sigma, sigma])
    if _u(gen) < cfg.solarize_p[which]:
        out = TF.solarize(out, 128)
    return out, box


def to_chw_rgb(arr: np.ndarray) -> torch.Tensor:
    """HxW, HxWx1, HxWx3 or HxWx4 uint8 -> (3, H, W) uint8 (grey replicated, alpha dropped)."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[..., :3]
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).contiguous()  # cached arrays are read-only


def two_views(img: torch.Tensor, cfg: ViewConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    v1, b1 = make_view(img, cfg, gen, 0)
    v2, b2 = make_view(img, cfg, gen, 1)
    return v1, v2, b1, b2
