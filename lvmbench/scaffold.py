"""``lvmbench task new`` and ``lvmbench task check``: a task folder without writing Python.

``task new ID --family F --from DIR`` copies the closest built-in task of the family (its protocols
with the paper's hyperparameters, preprocessing and metrics), fills the data section from what
``scaffold_infer`` reads in DIR (reader, image/mask patterns, classes, label/group/split columns),
writes ``OUT/ID/task.yaml`` (never over an existing file), validates it as ``lvmbench tasks`` would,
runs ``data verify`` on DIR and prints what is left to fill in. The task gets a suite of its own (its
results never join the LVM-Med tables) and a ``<suite>-quick`` profile: 64 cases, the template's
smoke budgets, to check the pipeline on the real data in a minute.

``task check FOLDER [--data-root DIR]`` validates any task folder, in the tree or not.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lvmbench.data.data_commands import report_lines
from lvmbench.data.verify import verify_task
from lvmbench.errors import UserError
from lvmbench.metric_names import is_known, known_metrics
from lvmbench.scaffold_infer import Inferred, infer
from lvmbench.spec import TaskSpec
from lvmbench.tasks import REPO_TASKS, TASKS, check_out_of_tree, load_task_file, read_task_yaml

TEMPLATES = {"classification": "brain_tumor_linear", "segmentation": "kvasir_seg", "segmentation-3d": "brats2018", "detection": "kvasir_det"}
QUICK_CASES = 64


def _template(family: str, dims: str) -> dict[str, Any]:
    name = TEMPLATES["segmentation-3d" if family == "segmentation" and dims != "2d" else family]
    raw = read_task_yaml(REPO_TASKS / name / "task.yaml")
    assert isinstance(raw, dict)
    raw["_template"] = name
    return raw


def build_spec(task_id: str, family: str, inferred: Inferred, data_dir: str, suite: str) -> tuple[dict[str, Any], list[str]]:
    """The new task.yaml as a mapping, and the lines of what is left to fill in."""
    t = _template(family, inferred.dims)
    protocols = {p: t["protocols"][p] for p in t.get("default_protocols") or list(t["protocols"])}
    smoke = (t.get("profiles") or {}).get("smoke") or {}
    quick: dict[str, Any] = {"data": {"limit": QUICK_CASES}}
    if "preprocess" in smoke:
        quick["preprocess"] = smoke["preprocess"]
    if "protocols" in smoke:
        quick["protocols"] = {p: v for p, v in smoke["protocols"].items() if p in protocols}
    classes = inferred.classes or ["class_a", "class_b"]
    spec: dict[str, Any] = {
        "id": task_id,
        "version": 1,
        "title": f"{task_id} ({family}; TODO: a one-line title)",
        "family": family,
        "dims": inferred.dims,
        "modality": "TODO",
        "classes": classes,
        "data": {"reader": inferred.reader, "dir": data_dir, "options": inferred.options},
        "split": inferred.split,
        "preprocess": t.get("preprocess", {}),
        "protocols": protocols,
        "default_protocols": list(protocols),
        "primary_metric": t["primary_metric"],
        "metrics": [],
        "suites": [suite],
        "profiles": {f"{suite}-quick": quick},
        "notes": [f"written by `lvmbench task new` from tasks/{t['_template']} (protocol settings: that task's paper values) and {data_dir}/ (data options)"],
    }
    probe = TaskSpec.model_validate({**spec, "metrics": []})
    known = known_metrics(probe)
    spec["metrics"] = [m for m in t.get("metrics", []) if is_known(m, known)]
    if family == "segmentation":  # the template's per-class settings do not carry over
        for p in protocols.values():
            p.pop("score_classes", None)
    todo = [
        "title, modality, data.source_url, data.licence",
        f"classes: {', '.join(classes)}" + (" (placeholders: the data did not name them)" if not inferred.classes else " (as found; reorder or rename if the publisher's order differs)"),
        *inferred.todo,
        f"split: {inferred.split.get('source')} (group_by: {inferred.split.get('group_by')}); check it is what the publisher intends",
        f"protocols: copied from tasks/{t['_template']} (paper values for that task); preprocess.size {spec['preprocess'].get('size')}",
        "reported rows (published numbers for this task), if any: reported: [{encoder, protocol, metrics: {accuracy: 0.86, auc: 0.90}, unit: percent|fraction, source}]"
        " and reported_suite: the suite whose budget they were measured under (default: the first suite without a profile)",
    ]
    return spec, todo


def render(spec: dict[str, Any], todo: list[str], found: list[str]) -> str:
    head = ["# task.yaml written by `lvmbench task new`; review before trusting numbers from it.", "# Found in the data:"]
    head += [f"#   - {f}" for f in found] or ["#   - (nothing)"]
    head += ["# Left to fill in or check:"] + [f"#   - {t}" for t in todo]
    body = yaml.safe_dump(spec, sort_keys=False, width=110, default_flow_style=None, allow_unicode=True)
    return "\n".join(head) + "\n" + body


def new_task(task_id: str, family: str, data: Path, out: Path, *, suite: str | None = None, verify: bool = True, log: Callable[[str], None] = print) -> Path:
    if not re.fullmatch(r"[a-z0-9_]+", task_id):
        raise UserError(f"task id '{task_id}' must be lower-case letters, digits and '_'", fix="e.g. derm_lesions")
    data = Path(data)
    if not data.is_dir():
        raise UserError("the data folder does not exist", path=data, fix="pass --from the dataset folder (its parent is the data root)")
    folder = Path(out) / task_id
    path = folder / "task.yaml"
    if path.exists():
        raise UserError("a task file already exists here; nothing written", path=path, fix="choose another id or --out, or delete the folder yourself")

    if task_id in TASKS.names():
        raise UserError(f"task '{task_id}' already exists (in {TASKS.get(task_id).folder})", fix="choose another id")
    suite = suite or task_id.replace("_", "-")
    inferred = infer(family, data)
    spec, todo = build_spec(task_id, family, inferred, data.name, suite)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(render(spec, todo, inferred.found), encoding="utf-8")
    log(f"wrote {path} (reader {inferred.reader}, {len(spec['classes'])} classes, from tasks/{TEMPLATES['segmentation-3d' if family == 'segmentation' and inferred.dims != '2d' else family]})")
    for f in inferred.found:
        log(f"  found: {f}")
    ok = check_task(folder, data.parent if verify else None, log=log)
    log("left to fill in or check (also at the top of the file):")
    for t in todo:
        log(f"  - {t}")
    root = data.parent.resolve()
    log("next:")
    log(f"  export LVMBENCH_TASK_PATH={Path(out).resolve()}")
    log(f"  lvmbench data verify {task_id} --data-root {root}")
    log(f"  lvmbench eval --encoder resnet18 --suite {suite}-quick --data-root {root}   # {QUICK_CASES} cases, small budgets")
    log(f"  lvmbench eval --encoder resnet50 --suite {suite} --data-root {root}")
    if not ok:
        log("the data check found errors (ERROR lines above): fix them or the data options before running")
    return path


def check_task(folder: Path, data_root: Path | None = None, log: Callable[[str], None] = print) -> bool:
    """Validate one task folder (spec, protocol settings, reader options, metric names, suites);
    with ``data_root``, verify its data too. True when it can run."""
    folder = Path(folder)
    path = folder if folder.name == "task.yaml" else folder / "task.yaml"
    if not (path.exists() or path.is_symlink()):  # anything else named task.yaml: read_task_yaml says what it is
        raise UserError("no task.yaml here", path=path, fix="pass a task folder (holding task.yaml)")
    spec = load_task_file(path)
    if path.resolve().parent.parent != REPO_TASKS.resolve():
        raw = read_task_yaml(path)
        check_out_of_tree(spec, raw if isinstance(raw, dict) else {})
    suites = sorted({*spec.suites, *spec.profiles})
    log(f"ok    {path}: task '{spec.id}' ({spec.family}, reader {spec.data.reader}, protocols {', '.join(spec.default_protocols or [])}; suites {', '.join(suites) or 'none'})")
    if data_root is None:
        return True
    report = verify_task(spec, Path(data_root), progress=False)
    for line in report_lines(report):
        log(line)
    return report.runnable
