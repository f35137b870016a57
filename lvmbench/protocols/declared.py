"""What each protocol is, without its code: name, families, whether it trains heads, its settings
model, its version, and the light class methods planning needs (``plan_settings``, ``primary_for``).

Planning, triage, task validation and ``lvmbench protocols`` read only these, so a command that
trains nothing never imports torch. Each implementation (``base.Protocol`` subclass in its own
module) inherits its declaration and does not restate it: the two cannot disagree, and a version
bump happens here, once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ValidationError

from lvmbench.errors import CheckpointError, UserError
from lvmbench.kit.files import sha256_file
from lvmbench.protocols.settings import (
    TRANSFORMER_BLOCK,
    DetectionSettings,
    FinetuneSettings,
    KNNSettings,
    LinearSettings,
    PromptEval3DSettings,
    PromptEvalSettings,
    PromptSeg3DSettings,
    PromptSegSettings,
    ProtocolSettings,
    RetrievalSettings,
    Seg2DSettings,
    Seg3DSettings,
    Seg3DViTSettings,
    SegViTSettings,
    SimilarityQuerySettings,
    settings_error,
)
from lvmbench.registry import Registry, load_entry_points
from lvmbench.spec import deep_merge, register_settings_resolver

if TYPE_CHECKING:
    from lvmbench.spec import TaskSpec


class Declared:
    """The light half of a protocol. Plugins subclass ``base.Protocol``, which derives from this."""

    name: ClassVar[str] = ""
    families: ClassVar[tuple[str, ...]] = ()
    uses_head: ClassVar[bool] = False
    # every key a task may set under protocols.<name>, typed (lvmbench/protocols/settings/)
    Settings: ClassVar[type[ProtocolSettings]] = ProtocolSettings
    # bump when a change to this protocol's code can move its numbers: older results become stale
    version: ClassVar[int] = 1
    volumes: ClassVar[bool] = False  # slices of volumes (3D tasks) rather than images

    @classmethod
    def plan_settings(cls, settings: ProtocolSettings, options: dict[str, Any]) -> ProtocolSettings:
        """Settings with the command-line options that belong to them (``--decoder-weights``)."""
        return settings

    @classmethod
    def primary_for(cls, task: TaskSpec) -> str:
        """The metric a result of this protocol on ``task`` is ranked by."""
        return task.primary_metric


class KNN(Declared):
    name, families, Settings = "knn", ("classification",), KNNSettings


class Linear(Declared):
    name, families, Settings, uses_head = "linear", ("classification",), LinearSettings, True


class Finetune(Declared):
    name, families, Settings, uses_head = "finetune", ("classification",), FinetuneSettings, True


class Retrieval(Declared):
    name, families, Settings = "retrieval", ("classification",), RetrievalSettings


class SimilarityQueries(Declared):
    name, families, Settings = "similarity_queries", ("classification",), SimilarityQuerySettings


class Detection(Declared):
    name, families, Settings = "detection", ("detection",), DetectionSettings


class Seg2D(Declared):
    name, families, Settings = "seg2d", ("segmentation",), Seg2DSettings


class Seg3D(Declared):
    name, families, Settings, volumes = "seg3d", ("segmentation",), Seg3DSettings, True


class Seg2DViT(Seg2D):
    name, Settings = "seg2d-vit", SegViTSettings


class Seg3DViT(Seg3D):
    name, Settings = "seg3d-vit", Seg3DViTSettings


class PromptSeg(Declared):
    families = ("segmentation",)
    Settings = PromptSegSettings
    version = 2  # 2: prompt presets and files; box_fill baseline

    @classmethod
    def plan_settings(cls, settings: ProtocolSettings, options: dict[str, Any]) -> ProtocolSettings:
        """``--decoder-weights`` fills ``decoder_weights``; the file's sha256 joins the settings
        (and so the result's identity): another decoder checkpoint is another result."""
        assert isinstance(settings, PromptEvalSettings)
        path = options.get("decoder_weights") or settings.decoder_weights
        if not path:
            return settings
        p = Path(path).expanduser()
        if not p.is_file():
            raise CheckpointError("decoder weights file not found", path=p, fix="pass an existing SAM-layout checkpoint to --decoder-weights (or decoder_weights in task.yaml)")
        return settings.model_copy(update={"decoder_weights": str(p.resolve()), "decoder_sha256": sha256_file(p)})

    @classmethod
    def primary_for(cls, task: TaskSpec) -> str:
        """The metric a result of this protocol is ranked by (also the leaderboard's for its
        reported rows). 2D: the task's own Dice (Table 2's prompt rows are per-image Dice too).
        3D: the prompt quantities, never Table 3's names: ``dice3d`` -> ``dice3d_prompt``, other
        ``dice*`` -> ``dice_prompt*``, else ``iou3d_prompt``."""
        p = task.primary_metric
        if not cls.volumes:
            return p if p.startswith("dice") or (p.startswith("iou") and not p.startswith("iou3d")) else "dice"
        if p.startswith("dice3d"):
            return "dice3d_prompt"  # the volume's slice-average Dice
        return "dice_prompt" + p.removeprefix("dice") if p.startswith("dice") else "iou3d_prompt"


class Seg2DPrompt(PromptSeg):
    name = "seg2d-prompt"


class Seg3DPrompt(PromptSeg):
    name, Settings, volumes = "seg3d-prompt", PromptSeg3DSettings, True


class Seg2DPromptZeroShot(PromptSeg):
    name, Settings = "seg2d-prompt-zeroshot", PromptEvalSettings


class Seg3DPromptZeroShot(PromptSeg):
    name, Settings, volumes = "seg3d-prompt-zeroshot", PromptEval3DSettings, True


BUILTIN: tuple[type[Declared], ...] = (
    KNN, Linear, Finetune, Retrieval, SimilarityQueries, Detection, Seg2D, Seg3D, Seg2DViT, Seg3DViT,
    Seg2DPrompt, Seg3DPrompt, Seg2DPromptZeroShot, Seg3DPromptZeroShot,
)


def _load(reg: Registry[type[Declared]]) -> None:
    for cls in BUILTIN:
        reg.add(cls.name, cls)
    load_entry_points(reg, "lvmbench.protocols", _declared_class)  # plugin packages (their import may load torch)


def _declared_class(name: str, obj: object) -> type[Declared]:
    if not (isinstance(obj, type) and issubclass(obj, Declared)):
        raise UserError(f"plugin protocol '{name}' is not a Protocol subclass ({obj!r})", fix="point the lvmbench.protocols entry point at a class deriving from lvmbench.protocols.base.Protocol")
    return obj


# name -> declaration; ``base.PROTOCOLS`` maps the same names to the implementations
DECLARED: Registry[type[Declared]] = Registry("protocol", _load)


def resolve_settings(task: TaskSpec, protocol: str, where: str | None = None, kind: str | None = None) -> ProtocolSettings:
    """``task.protocols[protocol]`` validated against the protocol's settings model and resolved for
    the task; any problem is one line naming the task file, the key and the nearest valid name.

    A ``transformer:`` block inside the protocol's settings holds values that replace the others for
    transformer encoders (``kind`` = ``lvmbench.encoders.kinds.encoder_kind``; the paper's ViT
    rows ran with their own rates and batch sizes). Both versions are validated whatever ``kind``."""
    where = where or f"protocols.{protocol}"
    path = (task.folder / "task.yaml") if task.folder else None
    try:
        cls = DECLARED.get(protocol)
    except UserError as e:
        raise UserError(f"task '{task.id}': {where}: {e}", path=path, fix="use a registered protocol (see `lvmbench protocols`)") from None
    raw = dict(task.protocols.get(protocol) or {})
    override = raw.pop(TRANSFORMER_BLOCK, None)
    if override is not None and (not isinstance(override, dict) or not override or TRANSFORMER_BLOCK in override):
        raise UserError(
            f"task '{task.id}': bad setting '{where}.{TRANSFORMER_BLOCK}': it must map setting names to the values transformer encoders use (got {override!r})",
            path=path,
            fix=f"write e.g. {TRANSFORMER_BLOCK}: {{lr: 0.0001}} (see `lvmbench protocols`)",
        )
    versions = {"default": (raw, where)}
    if override is not None:
        versions["transformer"] = (deep_merge(raw, override), f"{where}.{TRANSFORMER_BLOCK}")
    resolved = {}
    for name, (values, at) in versions.items():
        try:
            settings = cls.Settings.model_validate(values)
        except ValidationError as e:
            raise settings_error(e, cls.Settings, at, task.id, path) from None
        try:
            resolved[name] = settings.resolve(task)
        except ValueError as e:
            raise UserError(f"task '{task.id}': bad setting under '{at}': {e}", path=path, fix="correct it in task.yaml (see `lvmbench protocols`)") from None
    return resolved["transformer"] if kind == "transformer" and "transformer" in resolved else resolved["default"]


register_settings_resolver(resolve_settings)


def has_transformer_recipe(task: TaskSpec, protocol: str) -> bool:
    """Whether the task gives transformer encoders their own settings for ``protocol``."""
    return isinstance((task.protocols.get(protocol) or {}).get(TRANSFORMER_BLOCK), dict)


def validate_task_settings(task: TaskSpec) -> None:
    """Every protocol of the task and of each suite profile validates (called when a task loads)."""
    for name in task.protocols:
        resolve_settings(task, name)
    for suite, override in task.profiles.items():
        merged = task.for_suite(suite)
        for name in merged.protocols:
            touched = name in (override.get("protocols") or {})
            resolve_settings(merged, name, f"profiles.{suite}.protocols.{name}" if touched else None)
