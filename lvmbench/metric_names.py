"""Metric names a task may state: ``primary_metric``, ``metrics`` and each reported row's ``metric``
(or the names of its ``metrics:`` mapping).

A typo (``acuracy``) used to pass every check and fail after the first epoch with a KeyError; the
names are now checked when the task loads, against what the task's family and protocols report:

- classification: accuracy, balanced_accuracy, macro_f1, qwk, auc; retrieval's recall@K and map@r;
  similarity queries' triplet_agreement and odd_one_out;
- segmentation: dice, iou, hd95, nsd, dice3d, iou3d (and the prompt protocols' dice_prompt, dice3d_prompt,
  iou3d_prompt), each optionally ``_clean`` (scored at native size), then ``_<class>`` (per
  foreground class) and/or ``_<ood set>``; and ``<base>_avg|_ood|_gap`` with out-of-distribution sets;
- detection: ap, ap50, ap75, ap_small, ap_medium, ap_large, ar1, ar10, ar100, ``ap/<class>``,
  ``ap50/<class>``.

A plugin protocol that reports other names lists them in a ``metric_names`` class attribute (or, for
segmentation, new bases that take the suffixes above in ``metric_bases``).
"""

from __future__ import annotations

import re
from typing import Any

from lvmbench.errors import UserError
from lvmbench.protocols.declared import DECLARED
from lvmbench.registry import suggest

CLASSIFICATION = ("accuracy", "balanced_accuracy", "macro_f1", "qwk", "auc", "map@r", "triplet_agreement", "odd_one_out")
DETECTION = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar100")
SEG_BASES = ("dice", "iou", "hd95", "nsd", "dice3d", "iou3d", "dice_prompt", "dice3d_prompt", "iou3d_prompt")
_RECALL = re.compile(r"recall@\d+")


def _slug(name: str) -> str:
    out = "".join(ch if ch.isalnum() else "_" for ch in name.lower())
    return "_".join(part for part in out.split("_") if part)


def known_metrics(spec: Any) -> set[str]:
    """Every metric name the task's family and protocols can report (beyond recall@K)."""
    out: set[str] = set()
    if spec.family == "classification":
        out.update(CLASSIFICATION)
    elif spec.family == "detection":
        out.update(DETECTION)
        for c in spec.classes:
            out.update({f"ap/{c}", f"ap50/{c}"})
    else:
        classes = [_slug(c) for c in spec.classes[1:]] if len(spec.classes) > 2 else []
        oods = [_slug(o.name) for o in spec.ood]
        extra = tuple(b for name in spec.protocols for b in _protocol_attr(name, "metric_bases"))
        for base in SEG_BASES + extra:
            for clean in ("", "_clean"):
                for cls in ["", *(f"_{c}" for c in classes)]:
                    for ood in ["", *(f"_{o}" for o in oods)]:
                        out.add(f"{base}{clean}{cls}{ood}")
            if oods:
                out.update({f"{base}_avg", f"{base}_ood", f"{base}_gap"})
    for name in spec.protocols:
        out.update(_protocol_attr(name, "metric_names"))
    return out


def _protocol_attr(name: str, attr: str) -> tuple[str, ...]:
    try:
        return tuple(getattr(DECLARED.get(name), attr, ()))
    except UserError:
        return ()


def is_known(name: str, known: set[str]) -> bool:
    return name in known or bool(_RECALL.fullmatch(name))


def check_metric_names(spec: Any, where: str = "") -> None:
    """One line naming the task file, the key and the nearest valid name for an unknown metric."""
    known = known_metrics(spec)
    path = (spec.folder / "task.yaml") if spec.folder else None
    named = [(f"{where}primary_metric", spec.primary_metric)]
    named += [(f"{where}metrics", m) for m in spec.metrics]
    named += [(f"{where}reported[{i}].metric" + ("s" if r.metrics else ""), m) for i, r in enumerate(spec.reported) for m in r.stated_metrics()]
    for key, name in named:
        if not is_known(name, known):
            hint = suggest(name, sorted(known))
            raise UserError(
                f"task '{spec.id}': {key} '{name}' is not a metric a {spec.family} task reports" + (f"; did you mean '{hint}'?" if hint else ""),
                path=path,
                fix=f"use one of: {', '.join(sorted(known)[:12])}{' ...' if len(known) > 12 else ''} (see lvmbench/metric_names.py)",
            )
    for i, r in enumerate(spec.reported):
        ranked = protocol_metric(spec, r.protocol)
        if not r.stated_metrics() and ranked != spec.primary_metric:
            raise UserError(
                f"task '{spec.id}': {where}reported[{i}] ({r.protocol}) states no metric, and {r.protocol} results are ranked by '{ranked}', not the task's '{spec.primary_metric}'",
                path=path,
                fix=f"add metric: {ranked} to the row if that is what the source reports, else the metric it does report",
            )
        if r.protocol not in spec.protocols:
            hint = suggest(r.protocol, list(spec.protocols))
            raise UserError(
                f"task '{spec.id}': {where}reported[{i}].protocol '{r.protocol}' is not one of the task's protocols" + (f"; did you mean '{hint}'?" if hint else ""),
                path=path,
                fix=f"use one of: {', '.join(spec.protocols)}",
            )


def protocol_metric(spec: Any, protocol: str) -> str:
    """The metric results of ``protocol`` on this task are ranked by: the protocol's
    ``primary_for(spec)`` where it defines one (3D prompt protocols: ``iou3d_prompt`` /
    ``dice_prompt*``, never Table 3's names), else the task's primary metric. ``protocol`` may carry
    a head suffix (``linear-mlp``)."""
    for name in (protocol, protocol.rsplit("-", 1)[0]):
        try:
            if name in DECLARED:
                primary_for = getattr(DECLARED.get(name), "primary_for", None)
                return primary_for(spec) if primary_for else spec.primary_metric
        except UserError:
            break
    return spec.primary_metric
