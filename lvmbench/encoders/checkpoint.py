"""Safe checkpoint reading, prefix remapping, strict key checking and weight hashing.

Never a bare pickle: ``.safetensors`` goes through safetensors, everything else through
``torch.load(weights_only=True)``, which refuses any object that would run code on load.
"""

from __future__ import annotations

import fnmatch
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from lvmbench.errors import CheckpointError
from lvmbench.kit.files import sha256_file  # noqa: F401 (the package's API)

KNOWN_PREFIXES = ("module.", "backbone.", "encoder.", "image_encoder.", "model.", "online.", "net.")
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "backbone", "encoder", "teacher", "student", "online")
# Keys a backbone file may carry that an encoder legitimately has no use for (classifier heads).
DEFAULT_ALLOW = ("fc.*", "head.*", "heads.*", "classifier.*", "last_linear.*", "projector.*", "neck.*")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a flat ``name -> tensor`` mapping from a weights file without executing code."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError("weights file not found", path=p, fix="pass an existing file to --weights")
    if p.suffix == ".safetensors":
        try:
            obj: object = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"not a readable safetensors file ({e})", path=p, fix="re-export the weights with safetensors.torch.save_file") from None
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).split("\n")[0]
            # torch names the offending opcode on a line of its own: GLOBAL = an importable object
            # (code could run); anything else (e.g. "Unsupported operand 95") = not a pickle of tensors
            detail = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), first)
            if "Unsupported global" in str(e) or "GLOBAL" in str(e):
                raise CheckpointError(
                    f"refusing to unpickle: the file holds objects beyond tensors, which could execute code ({detail[:120]})",
                    path=p,
                    fix="re-save it as a plain state_dict (torch.save(model.state_dict(), f)) or as .safetensors",
                ) from None
            raise CheckpointError(f"not a PyTorch checkpoint ({detail[:160]})", path=p, fix="pass a .pth/.pt/.torch state_dict or a .safetensors file") from None
        except Exception as e:  # torch raises KeyError/RuntimeError/EOFError... for non-checkpoints
            raise CheckpointError(
                f"not a PyTorch checkpoint ({e.__class__.__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})",
                path=p,
                fix="pass a .pth/.pt/.torch state_dict or a .safetensors file",
            ) from None
    sd = _unwrap(obj, p)
    check_finite(sd, p)
    return sd


def check_finite(sd: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Refuse a state dict holding NaN or Inf anywhere (a run saved after it diverged).

    Such weights do not fail by themselves: frozen protocols crash later on NaN features and
    fine-tuned ones score them (Dice 0) and exit 0. Every floating tensor is checked, allow-listed
    heads included: a non-finite head means the whole run diverged, not only the head.
    """
    bad: list[tuple[str, int, int, int]] = []
    for key, v in sd.items():
        if not (v.is_floating_point() or v.is_complex()):
            continue
        finite = torch.isfinite(v)
        if bool(finite.all()):
            continue
        nan = int(torch.isnan(v).sum())
        bad.append((key, nan, int((~finite).sum()) - nan, v.numel()))
    if not bad:
        return
    key, nan, inf, numel = bad[0]
    raise CheckpointError(
        f"{len(bad)} of {len(sd)} tensors hold NaN/Inf values, first '{key}' ({nan} NaN, {inf} Inf of {numel} entries)",
        path=path,
        fix="the run that saved it diverged; pass an earlier checkpoint or retrain with a lower learning rate",
    )


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` header (``{}`` for other formats or none)."""
    p = Path(path)
    if p.suffix != ".safetensors":
        return {}

    try:
        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"not a readable safetensors file ({e})", path=p, fix="re-export the weights with safetensors.torch.save_file") from None


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is not None:
                obj = inner
                continue
        break
    raise CheckpointError(
        "no state_dict found (expected a mapping of parameter names to tensors, possibly under "
        f"one of {', '.join(WRAPPER_KEYS)})",
        path=path,
        fix="pass the file holding the encoder's weights (torch.save(model.state_dict(), f))",
    )


@dataclass
class LoadReport:
    matched: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    stripped_prefix: str | None = None

    def as_dict(self) -> dict:
        return {
            "matched": self.matched,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "ignored": self.ignored,
            "stripped_prefix": self.stripped_prefix,
        }


def remap_prefixes(sd: Mapping[str, torch.Tensor], target_keys: Iterable[str]) -> tuple[dict[str, torch.Tensor], str | None]:
    """Strip wrapper prefixes (``module.``, ``backbone.`` ... in any nesting) from keys that then
    match the target. Keys that match nothing stay as they are and are judged as unexpected later,
    so a full-model checkpoint (backbone + head) maps onto its backbone part."""
    target = set(target_keys)
    out: dict[str, torch.Tensor] = {}
    stripped: set[str] = set()
    for key, value in sd.items():
        cand = key
        while cand not in target:
            prefix = next((p for p in KNOWN_PREFIXES if cand.startswith(p)), None)
            if prefix is None:
                break
            cand = cand[len(prefix):]
        if cand in target and cand != key:
            stripped.add(key[: len(key) - len(cand)])
            out[cand] = value
        else:
            out[key] = value
    return out, (",".join(sorted(stripped)) or None)


def load_into(
    module: nn.Module,
    sd: Mapping[str, torch.Tensor],
    *,
    allow_unexpected: Iterable[str] = DEFAULT_ALLOW,
    allow_missing: Iterable[str] = (),
    path: str | Path | None = None,
    rename: Mapping[str, str] | None = None,
) -> LoadReport:
    """Load ``sd`` into ``module`` after prefix remapping; fail on any key or shape problem that is
    not covered by the allow-lists (glob patterns)."""
    target = module.state_dict()
    sd2, stripped = remap_prefixes(sd, target.keys())
    if rename:
        sd2 = {_rename(k, rename): v for k, v in sd2.items()}
    allow_u = list(allow_unexpected)
    allow_m = list(allow_missing)
    missing = [k for k in target if k not in sd2 and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd2 if k not in target]
    ignored = [k for k in unexpected if any(fnmatch.fnmatch(_strip_all(k), pat) for pat in allow_u)]
    unexpected = [k for k in unexpected if k not in ignored]
    missing = [k for k in missing if not any(fnmatch.fnmatch(k, pat) for pat in allow_m)]
    mismatched = [
        f"{k} {tuple(sd2[k].shape)} vs {tuple(target[k].shape)}"
        for k in sd2
        if k in target and tuple(sd2[k].shape) != tuple(target[k].shape)
    ]
    where = path if path is not None else "weights"
    if mismatched:
        raise CheckpointError(
            f"{len(mismatched)} tensor(s) have the wrong shape for {module.__class__.__name__}, e.g. {mismatched[0]}",
            path=where,
            fix="check that --encoder names the architecture these weights were trained with",
        )
    if missing or unexpected:
        what = []
        if missing:
            what.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            what.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise CheckpointError(
            f"keys do not match {module.__class__.__name__}: {'; '.join(what)}",
            path=where,
            fix="check that --encoder names the architecture these weights were trained with",
        )
    load = {k: v for k, v in sd2.items() if k in target}
    module.load_state_dict(load, strict=False)
    return LoadReport(matched=len(load), ignored=ignored, stripped_prefix=stripped)


def _strip_all(key: str) -> str:
    while prefix := next((p for p in KNOWN_PREFIXES if key.startswith(p)), None):
        key = key[len(prefix):]
    return key


def _rename(key: str, rename: Mapping[str, str]) -> str:
    for old, new in rename.items():
        key = key.replace(old, new)
    return key
