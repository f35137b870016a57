"""``lvmbench data prompts TASK``: draw and write a task's prompt file, export it, or import one.

The masks are prepared exactly as the prompt protocols prepare them (image size, resize, the
prompted classes, the decoded cache), through the same code (:func:`resolve_prompts`), so the
file written here is the file ``lvmbench eval`` reads, byte for byte.

- write (default): the drawn prompts of (suite, task, rule, seed) beside the split;
- ``--export FILE``: those prompts (or the imported ones) to FILE, as an lvmbench prompt file or
  (``--format sam-med2d``) the test split as SAM-Med2D's prompt JSON at ``--frame`` px (256);
- ``--import FILE``: an lvmbench prompt file or a SAM-Med2D prompt JSON (its coordinates at
  ``--frame`` px, 256 by default), checked against the masks, becomes the task's imported prompts:
  used by every seed, its sha256 in every result's identity. Delete it to go back to drawn prompts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lvmbench.data.cache import ArrayCache
from lvmbench.data.prompts import files as pf
from lvmbench.data.prompts.items import ItemPrompt
from lvmbench.data.prompts.rules import PromptRule
from lvmbench.data.prompts.transfer import read_sam_med2d, sam_med2d_doc
from lvmbench.data.task_data import load_task_data
from lvmbench.errors import UserError
from lvmbench.outputs import write_atomic
from lvmbench.paths import usable_cache_dir
from lvmbench.protocols.declared import DECLARED, resolve_settings
from lvmbench.protocols.prompt_sets import (
    check_imported,
    resolve_prompts,
    sam_med2d_aliases,
)
from lvmbench.protocols.seg_data import Prepared, prepare
from lvmbench.protocols.seg_prompt import prompt_prep
from lvmbench.spec import TaskSpec

PROMPT_PROTOCOLS = ("seg2d-prompt", "seg3d-prompt", "seg2d-prompt-zeroshot", "seg3d-prompt-zeroshot")


def prompt_settings(spec: TaskSpec, protocol: str | None, preset: str | None) -> tuple[str, Any]:
    """(protocol, resolved settings) whose prompt rule the file is for; ``preset`` replaces the
    task's preset (keys the task file sets beside it still apply)."""
    names = [p for p in PROMPT_PROTOCOLS if p in spec.protocols]
    name = protocol or (names[0] if names else None)
    if name is None or name not in spec.protocols or name not in PROMPT_PROTOCOLS:
        raise UserError(f"task '{spec.id}' has no prompt protocol{f' {name}' if name else ''}", fix=f"pass --protocol one of: {', '.join(names) or 'none (not a segmentation task)'}")
    hp = resolve_settings(spec, name)
    if preset is not None:
        raw = dict((spec.protocols.get(name) or {}).get("prompt") or {})
        try:
            rule = PromptRule.model_validate({**raw, "preset": preset})
        except ValueError as e:
            first = str(e).splitlines()
            raise UserError(f"--preset {preset}: {first[-1].strip() if first else e}", fix="use lvmmed, medsam, sam-med2d or tight") from None
        hp = hp.model_copy(update={"prompt": rule})
    return name, hp


def load_parts(spec: TaskSpec, suite: str, data_root: Path | None, protocol: str, hp: Any, cache_dir: Path, progress: bool) -> tuple[dict[str, Prepared], bool]:
    """Every split (the whole training split) and out-of-distribution set, prepared as the
    protocol prepares them."""
    volumes = bool(DECLARED.get(protocol).volumes)
    data = load_task_data(spec, data_root, suite=suite)
    prep, cache = prompt_prep(hp, spec.preprocess.channels), ArrayCache(cache_dir / "decoded")
    parts = {s: prepare(data.reader, cs, prep, cache, native=s == "test", volumes=volumes, desc=f"prompts:{s}", progress=progress)
             for s in ("train", "val", "test") if (cs := data.split[s])}
    for o in data.ood:
        parts[f"ood:{o.name}"] = prepare(o.reader, o.cases, prep, cache, native=True, volumes=volumes, desc=f"prompts:{o.name}", progress=progress)
    return parts, volumes


def _imported_items(src: Path, fmt: str, frame: int | None, rule: PromptRule, parts: dict[str, Prepared], volumes: bool) -> tuple[dict[str, list[ItemPrompt]], str]:
    if fmt == "lvmbench":
        doc = pf.read_prompt_file(src)
        scale = rule.resolution / float(frame or doc.get("frame") or rule.resolution)
        items = pf.parts_of(doc, src)
        for its in items.values():
            for it in its:
                it.box = None if it.box is None else [v * scale for v in it.box]
                it.points = [[x * scale, y * scale] for x, y in it.points]
        return items, "lvmbench prompt file"
    if "test" not in parts:
        raise UserError("the task has no test split to import SAM-Med2D prompts for", path=src, fix="check the task's split")
    scale = rule.resolution / float(frame or 256)
    return {"test": read_sam_med2d(src, sam_med2d_aliases(parts, "test", volumes), scale)}, "SAM-Med2D prompt JSON"


def _detect(src: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    try:
        head = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the prompt file ({e.__class__.__name__})", path=src, fix="pass an lvmbench prompt file or a SAM-Med2D <size>_prompt.json") from None
    return "lvmbench" if isinstance(head, dict) and head.get("format") == pf.FORMAT else "sam-med2d"


def prompts_command(spec: TaskSpec, suite: str, data_root: Path | None, *, preset: str | None = None, seed: int = 0, protocol: str | None = None,
                    export: Path | None = None, import_from: Path | None = None, fmt: str | None = None, frame: int | None = None,
                    force: bool = False, cache_dir: Path | None = None, progress: bool = True) -> str:
    """Run the command for ``spec`` (the suite's profile applied) on ``data_root`` (the suite's,
    as ``lvmbench eval`` resolves it); returns the line it prints."""
    if export is not None and import_from is not None:
        raise UserError("--export and --import go one at a time", fix="import first, then export")
    if fmt not in (None, "lvmbench", "sam-med2d"):
        raise UserError(f"unknown --format '{fmt}'", fix="use lvmbench or sam-med2d")
    name, hp = prompt_settings(spec, protocol, preset)
    parts, volumes = load_parts(spec, suite, data_root, name, hp, usable_cache_dir(cache_dir), progress)
    key = pf.draw_key(hp.prompt, list(hp.prompt_classes or []), hp.image_size, hp.resize)
    if import_from is not None:
        target = pf.imported_path(suite, spec.id, key)
        if target.exists() and not force:
            raise UserError("imported prompts for this task and rule exist already", path=target, fix="pass --force to replace them, or delete the file")
        kind = _detect(import_from, fmt)
        items, what = _imported_items(import_from, kind, frame, hp.prompt, parts, volumes)
        unknown = sorted(set(items) - set(parts))
        if unknown:
            raise UserError(f"part '{unknown[0]}' of the file is not a split of task '{spec.id}'", path=import_from, fix=f"parts: {', '.join(parts)}")
        head = pf.header(task=spec.id, suite=suite, seed=None, origin=f"imported from {import_from} ({what}, sha256 {pf.sha256_of(import_from)})",
                         key=key, rule=hp.prompt, classes=list(hp.prompt_classes or []), image_size=hp.image_size)
        # checked against the masks by the run's own code (a file that passes here passes in eval),
        # before anything is written
        check_imported(import_from, items, parts, volumes, hp, seed)
        pf.write_prompt_file(target, pf.make_doc(head, items))
        n = sum(len(v) for v in items.values())
        return f"imported {n} prompt(s) ({', '.join(sorted(items))}) into {target}; every seed of {suite}/{spec.id} with preset {hp.prompt.label()} now reads them"
    used, info = resolve_prompts(suite, spec.id, seed, hp, parts, volumes)
    if export is None:
        counts = ", ".join(f"{p} {sum(it.prompted for it in v)}/{len(v)}" for p, v in used.items())
        return f"{info['prompt_origin']} prompts ({hp.prompt.label()}, seed {seed}): {info['prompt_file']} (sha256 {info['prompt_sha256'][:12]}); prompted: {counts}"
    kind = fmt or "lvmbench"
    if kind == "lvmbench":
        doc = pf.read_prompt_file(Path(info["prompt_file"])) if Path(info["prompt_file"]).is_file() else None
        if doc is None:
            raise UserError("the prompt file could not be written, so there is nothing to export", path=info["prompt_file"], fix="make the splits folder writable (LVMBENCH_SPLITS)")
        if export.exists() and not force:
            raise UserError("the export file exists", path=export, fix="pass --force to replace it (only lvmbench prompt files are replaced)")
        pf.write_prompt_file(export, doc)
    else:
        if export.exists() and not force:
            raise UserError("the export file exists", path=export, fix="pass --force to replace it")
        out = sam_med2d_doc(used.get("test", []), float(frame or 256) / hp.prompt.resolution)
        write_atomic(export, json.dumps(out, indent=2) + "\n", option="--export FILE")
    return f"exported the {info['prompt_origin']} prompts ({hp.prompt.label()}, seed {seed}) to {export} ({kind})"
