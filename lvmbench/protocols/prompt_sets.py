"""The prompts a prompt-protocol unit reads: drawn under the task's ``prompt:`` rule from the masks
as the protocol prepares them, shared through the task's prompt file, or imported.

Every encoder run on one (suite, task, rule, seed) gets the same prompts: they are a deterministic
draw per image (``lvmbench.data.prompts.draw``) and are written to, and checked against, one file
(``lvmbench.data.prompts.files``); an imported file replaces the draw for the parts it covers,
after its prompts are checked against the masks. ``lvmbench data prompts`` runs the same code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lvmbench.data.prompts import files as pf
from lvmbench.data.prompts.draw import draw_items, object_at
from lvmbench.data.prompts.items import ItemPrompt
from lvmbench.data.prompts.transfer import Key, check_items, item_name
from lvmbench.errors import DataError, UserError
from lvmbench.protocols.seg_data import Prepared


def prep_items(prep: Prepared, volumes: bool) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """(case index, slice index, image (C, P, P), labels (P, P)) of every image or slice."""
    out = []
    for n, (img, mask) in enumerate(zip(prep.images, prep.masks)):
        if volumes:
            out += [(n, d, img[d][None], mask[d]) for d in range(img.shape[0])]
        else:
            out.append((n, 0, img, mask))
    return out


def case_objects(prep: Prepared, n: int, volumes: bool, classes: list[int], size: int) -> tuple[list[Key], torch.Tensor]:
    """Keys and (k, size, size) object masks of case ``n`` (one per slice of a volume)."""
    mask = prep.masks[n]
    labels = mask if volumes else mask[None]
    keys = [(prep.cases[n].id, d if volumes else -1) for d in range(labels.shape[0])]
    return keys, object_at(labels, classes, size)


def draw_key(hp: Any) -> str:
    return pf.draw_key(hp.prompt, list(hp.prompt_classes or []), hp.image_size, hp.resize)


def _part_prompts(part: str, prep: Prepared, volumes: bool, hp: Any, seed: int, imported: dict[Key, ItemPrompt] | None, path: Any) -> list[ItemPrompt]:
    """One part's prompts in item order: drawn, or imported ones checked case by case."""
    rule, classes = hp.prompt, list(hp.prompt_classes or [])
    out: list[ItemPrompt] = []
    for n in range(len(prep.cases)):
        keys, objs = case_objects(prep, n, volumes, classes, rule.resolution)
        drawn = draw_items(objs, [(c, None if s < 0 else s) for c, s in keys], rule, part, seed)
        if imported is None:
            out += drawn
            continue
        mine = [imported.pop(k) for k in keys if k in imported]
        check_items(path, part, mine, {k: o.numpy() > 0 for k, o in zip(keys, objs)})
        given = {it.key(): it for it in mine}
        for k, d in zip(keys, drawn):
            it = given.get(k)
            if it is None:
                out.append(d)  # an empty slice the file does not prompt: the rule's own prompt
                continue
            it.empty = d.empty
            it.prompted = not (d.empty and rule.empty == "skip")
            out.append(ItemPrompt.from_json(it.to_json()))
    if imported:
        raise DataError(f"unknown case id '{item_name(next(iter(imported)))}' in part '{part}' (not an image of the task's {part} split)", path=path, fix=f"import prompts made on this task's {part} split")
    return out


def check_imported(path: Any, given: dict[str, list[ItemPrompt]], parts: dict[str, Prepared], volumes: bool, hp: Any, seed: int) -> None:
    """Imported prompts against the masks of the parts they name (one line on the first problem)."""
    for part, items in given.items():
        _part_prompts(part, parts[part], volumes, hp, seed, {it.key(): it for it in items}, path)


def resolve_prompts(suite: str, task: str, seed: int, hp: Any, parts: dict[str, Prepared], volumes: bool, log: Callable[[str], None] | None = None) -> tuple[dict[str, list[ItemPrompt]], dict[str, Any]]:
    """Prompts of every part (``train``/``val``/``test``/``ood:<name>``), aligned with
    :func:`prep_items`, and what the result records about them (file, sha256, origin)."""
    key = draw_key(hp)
    imp = pf.imported_path(suite, task, key)
    info: dict[str, Any] = {"prompt_key": key, "prompt_preset": hp.prompt.label()}
    if imp.is_file():
        doc = pf.read_prompt_file(imp)
        given = pf.parts_of(doc, imp)
        out = {}
        for part, prep in parts.items():
            items = {it.key(): it for it in given.get(part, [])} if part in given else None
            out[part] = _part_prompts(part, prep, volumes, hp, seed, items, imp)
        info.update(prompt_origin="imported", prompt_file=str(imp), prompt_sha256=pf.sha256_of(imp), prompt_parts_imported=sorted(p for p in given if p in parts))
        return out, info
    out = {part: _part_prompts(part, prep, volumes, hp, seed, None, None) for part, prep in parts.items()}
    path = pf.drawn_path(suite, task, key, seed)
    head = pf.header(task=task, suite=suite, seed=seed, origin="drawn by lvmbench", key=key, rule=hp.prompt, classes=list(hp.prompt_classes or []), image_size=hp.image_size)
    doc, state = pf.merge_drawn(path, head, out)
    if state != "same":
        try:
            pf.write_prompt_file(path, doc)
        except (OSError, UserError) as e:  # drawn prompts are reproducible: the run goes on without the record
            (log or print)(f"note: prompt file not written ({e}); the prompts are redrawn identically by every run")
    if state == "redrawn" and log:
        log(f"note: {path} held prompts other than its rule draws (data changed, or edited by hand): redrawn; import your own prompts with `lvmbench data prompts {task} --import FILE`")
    info.update(prompt_origin="drawn", prompt_file=str(path), prompt_sha256=hashlib.sha256(pf.doc_bytes(doc)).hexdigest())
    return out, info


def sam_med2d_aliases(parts: dict[str, Prepared], part: str, volumes: bool) -> dict[str, Key]:
    """Keys a SAM-Med2D file may use for the items of ``part``: case id, ``<case>#<slice>``, and a
    2D case's mask file name when no other case shares it."""
    prep = parts[part]
    out: dict[str, Key] = {}
    names: dict[str, list[str]] = {}
    for n, case in enumerate(prep.cases):
        if volumes:
            for d in range(prep.masks[n].shape[0]):
                out[f"{case.id}#{d}"] = (case.id, d)
        else:
            out[case.id] = (case.id, -1)
            target = case.target if isinstance(case.target, str) else None
            if target:
                names.setdefault(target.replace("\\", "/").rsplit("/", 1)[-1], []).append(case.id)
    for name, ids in names.items():
        if len(ids) == 1:
            out.setdefault(name, (ids[0], -1))
    return out


def stack_prompts(items: list[ItemPrompt], idx: list[int], k: int) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Boxes (n, 4), points (n, k, 2), labels (n, k) at the rule's grid and empty (n,) of the
    chosen items (None where the rule gives no box / no points)."""
    sel = [items[i] for i in idx]
    has_box = any(it.box is not None for it in sel)
    boxless = next((it for it in sel if has_box and it.box is None), None)
    if boxless is not None:  # an imported file that boxes some images and not others
        raise DataError(f"'{item_name(boxless.key())}' has no box while other images have one", fix="give every prompted image a box, or none")
    boxes = torch.tensor([it.box if it.box is not None else [0.0, 0.0, 0.0, 0.0] for it in sel], dtype=torch.float32).reshape(-1, 4) if has_box else None
    if k:
        pts = torch.tensor(np.array([np.asarray(it.points, dtype=np.float32).reshape(-1, 2) for it in sel]).reshape(len(sel), -1, 2), dtype=torch.float32)
        labels = torch.tensor(np.array([np.asarray(it.labels, dtype=np.int64) for it in sel]).reshape(len(sel), -1), dtype=torch.int64)
    else:
        pts = labels = None
    empty = torch.tensor([it.empty for it in sel], dtype=torch.bool)
    return boxes, pts, labels, empty
