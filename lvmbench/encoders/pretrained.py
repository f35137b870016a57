"""Released weights of reference encoders, read from local caches only: nothing is downloaded.

``lvmbench eval --encoder NAME --pretrained`` (implied for a preset name) finds the weights file
the encoder's publisher released:

- **timm names and torchvision ResNets**: the file of timm's Hugging Face Hub repo
  (``timm/<model>.<tag>``, the tag timm picks by default; a torchvision ResNet is
  ``timm/<arch>.tv_in1k``, torchvision's own ImageNet weights) in the hub cache (``$HF_HUB_CACHE``,
  else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), through huggingface_hub's
  ``try_to_load_from_cache``, which never opens a connection (``HF_HUB_OFFLINE`` semantics);
- **files published at a URL** (the DINO, MoCo v2 and Barlow Twins ResNet-50s, Meta's SAM ViT-B):
  torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), where ``torch.hub`` puts them.

A missing file is one line naming the command that fetches it on a connected machine and where to
copy it. The file found is then loaded like ``--weights FILE`` (strict keys, NaN check) and its
sha256 — of the file actually read, the blob behind the hub cache's symlink — is the encoder's
identity in every result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from timm.models import get_pretrained_cfg

from lvmbench.encoders.adapters import TORCHVISION_RESNETS, TimmEncoder
from lvmbench.encoders.base import Encoder
from lvmbench.encoders.checkpoint import DEFAULT_ALLOW, load_into, read_state_dict
from lvmbench.encoders.registry import ENCODERS, _generic, is_known, unknown_encoder
from lvmbench.errors import CheckpointError, UserError


@dataclass(frozen=True)
class HubFile:
    """A weights file of a Hugging Face Hub model repo (the first of ``files`` the cache holds)."""

    repo: str
    files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    revision: str = "main"

    def describe(self) -> str:
        return f"HF hub {self.repo} ({self.files[0]})"


@dataclass(frozen=True)
class UrlFile:
    """A weights file published at a URL, kept where ``torch.hub`` keeps downloads."""

    url: str

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def describe(self) -> str:
        return self.url


Source = HubFile | UrlFile


@dataclass(frozen=True)
class Preset:
    """A named reference encoder: an architecture and the weights its publisher released."""

    name: str
    arch: str  # an lvmbench encoder name (torchvision ResNet or timm model)
    source: Source
    what: str
    paper: str  # how it relates to the paper's reported rows
    keep_prefix: str | None = None  # only keys under this prefix are the encoder (prefix stripped)


_FB = "https://dl.fbaipublicfiles.com"
PRESETS = {
    p.name: p
    for p in (
        Preset(
            "imagenet-r50-tv",
            "resnet50",
            HubFile("timm/resnet50.tv_in1k"),
            "ResNet-50 supervised on ImageNet-1k: torchvision's IMAGENET1K_V1 weights (hosted by timm)",
            "the 'ImageNet supervised R50' rows",
        ),
        Preset(
            "dino-r50",
            "resnet50",
            UrlFile(f"{_FB}/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth"),
            "ResNet-50, DINO self-supervised on ImageNet-1k (facebookresearch/dino)",
            "reference only: the paper's 'DINO R50' was trained on its medical images",
        ),
        Preset(
            "mocov2-r50",
            "resnet50",
            UrlFile(f"{_FB}/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar"),
            "ResNet-50, MoCo v2 800 epochs on ImageNet-1k (facebookresearch/moco; the query encoder)",
            "reference only: the paper's 'MoCo-v2 R50' was trained on its medical images",
            keep_prefix="module.encoder_q.",
        ),
        Preset(
            "barlowtwins-r50",
            "resnet50",
            UrlFile(f"{_FB}/barlowtwins/ep1000_bs2048_lrw0.2_lrb0.0048_lambd0.0051/resnet50.pth"),
            "ResNet-50, Barlow Twins 1000 epochs on ImageNet-1k (facebookresearch/barlowtwins)",
            "reference only: the paper's 'Barlow Twins R50' was trained on its medical images",
        ),
    )
}

# Encoders registered elsewhere whose release file is public: ``--pretrained`` finds it.
RELEASES: dict[str, tuple[Source, str]] = {
    "sam-vitb": (UrlFile(f"{_FB}/segment_anything/sam_vit_b_01ec64.pth"), "the 'SAM ViT-B' rows (Meta's release file)"),
}


def hub_cache() -> Path:
    """The Hugging Face hub cache, as huggingface_hub resolves it, read from the environment now
    (huggingface_hub reads it once at import)."""
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(env[var]).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def torch_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def source_for(name: str) -> tuple[Source, str]:
    """Where the released weights of encoder ``name`` come from, and what they are."""
    if name in PRESETS:
        p = PRESETS[name]
        return p.source, p.what
    if name in RELEASES:
        return RELEASES[name][0], RELEASES[name][1]
    if name in ENCODERS:
        raise UserError(
            f"encoder '{name}' has no released weights lvmbench can find in a cache",
            fix="download its weights file and pass --weights FILE (see `lvmbench encoders`)",
        )
    if not is_known(name):
        raise unknown_encoder(name)
    base = name.split("/", 1)[1] if name.startswith(("timm/", "torchvision/")) else name
    if not name.startswith("timm/") and base in TORCHVISION_RESNETS:
        return HubFile(f"timm/{base}.tv_in1k"), f"torchvision's ImageNet weights of {base} (hosted by timm)"

    cfg = get_pretrained_cfg(base)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UserError(f"timm has no released weights for '{base}'", fix="pick a timm name with a pretrained tag (`timm.list_pretrained()`), or pass --weights FILE")
    if cfg.hf_hub_id:
        repo, _, rev = cfg.hf_hub_id.partition("@")
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HubFile.files
        return HubFile(repo, files, rev or "main"), f"timm's released weights of {base}"
    return UrlFile(cfg.url), f"timm's released weights of {base}"


def find(source: Source) -> Path | None:
    """The cached file of ``source``, or None; never touches the network."""
    if isinstance(source, UrlFile):
        path = torch_checkpoints() / source.name
        return path if path.is_file() else None

    for filename in source.files:
        hit = try_to_load_from_cache(source.repo, filename, cache_dir=str(hub_cache()), revision=source.revision)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def missing(name: str, source: Source) -> CheckpointError:
    if isinstance(source, UrlFile):
        folder = torch_checkpoints()
        return CheckpointError(
            f"no cached weights for '{name}': {source.name} is not in torch hub's checkpoint folder {folder}; nothing is downloaded at run time",
            fix=f"""on a machine with internet run `python -c "import torch; torch.hub.download_url_to_file('{source.url}', '{source.name}')"` """
            f"and copy {source.name} into {folder} here (or set TORCH_HOME to a folder whose hub/checkpoints holds it)",
        )
    return CheckpointError(
        f"no cached weights for '{name}': {source.repo} ({source.files[0]}) is not in the Hugging Face cache {hub_cache()}; nothing is downloaded at run time",
        fix=f"""on a machine with internet run `python -c "from huggingface_hub import hf_hub_download; hf_hub_download('{source.repo}', '{source.files[0]}')"` """
        "(or `hf download " + f"{source.repo} {source.files[0]}`), copy that machine's Hugging Face cache folder ($HF_HOME, default ~/.cache/huggingface) "
        "here and set HF_HOME to the copy",
    )


def released_weights(name: str, weights: Path | None = None, pretrained: bool = False) -> Path | None:
    """The weights file an evaluation of ``name`` loads: ``weights`` as given, else — with
    ``pretrained`` or for a preset — the released file from the local cache."""
    if not pretrained and name not in PRESETS:
        return weights
    if weights is not None:
        if pretrained:
            raise UserError("--pretrained and --weights both choose the weights", fix="pass --weights FILE for a file of yours, or --pretrained for the released weights")
        return weights  # a preset evaluated on the user's own copy of its file
    source, _ = source_for(name)
    path = find(source)
    if path is None:
        raise missing(name, source)
    return path


def _builder(preset: Preset):
    def build(weights: Path | None) -> Encoder:
        if weights is None:
            raise CheckpointError(
                f"encoder '{preset.name}' is a preset of released weights and needs its file",
                fix=f"run `lvmbench eval --encoder {preset.name}` (the weights come from the local cache), or pass weights=released_weights('{preset.name}')",
            )
        enc = _generic(preset.arch)
        sd = read_state_dict(weights)
        if preset.keep_prefix:
            sd = {k[len(preset.keep_prefix):]: v for k, v in sd.items() if k.startswith(preset.keep_prefix)}
            if not sd:
                raise CheckpointError(f"no weights under '{preset.keep_prefix}' in this file", path=weights, fix=f"pass the release file of {preset.source.describe()}")
        target = enc.model if isinstance(enc, TimmEncoder) else enc
        enc._load_report = load_into(target, sd, allow_unexpected=DEFAULT_ALLOW, path=weights).as_dict()
        return enc

    build.__doc__ = preset.what
    build.arch = preset.arch  # lvmbench.encoders.kinds: the recipe follows the architecture
    return build


for _p in PRESETS.values():
    ENCODERS.add(_p.name, _builder(_p))


def listing() -> list[list[str]]:
    """Rows of ``lvmbench encoders``: name, architecture, where its weights come from, how it
    relates to the paper's rows, and whether this machine's cache holds them."""

    def cached(source: Source) -> str:
        return "yes" if find(source) is not None else "no"

    rows = []
    for p in PRESETS.values():
        rows.append([p.name, p.arch, p.source.describe(), p.paper, cached(p.source)])
    for name, (source, paper) in RELEASES.items():
        rows.append([f"{name} --pretrained", name, source.describe(), paper, cached(source)])
    rows.append(["resnet50 --pretrained", "resnet50", "HF hub timm/resnet50.tv_in1k (model.safetensors)", "same file as imagenet-r50-tv", cached(HubFile("timm/resnet50.tv_in1k"))])
    rows.append(["<timm name> --pretrained", "timm", "HF hub timm/<name>.<default tag>", "", ""])
    return rows
