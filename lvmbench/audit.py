"""``lvmbench audit``: were a task's test images part of an encoder's pretraining data?

Manifests read (``--pretrain-manifest``):

- ``pretrain.json`` written by ``lvmbench pretrain`` (``data.manifest``: path, shard member,
  sha256 per file); the encoder it produced (``output.encoder_sha256``) is the one the findings
  concern;
- any JSON list of paths or of ``{"path": ..., "sha256": ...}`` entries (also under ``files``);
- LVM-Med's ``lvm-med-training-data/<Dataset>/file_list.txt`` (one path per line), or the
  ``lvm-med-training-data`` folder itself (every ``*/file_list.txt`` in it).

Each task's test cases are compared three ways:

- **name**: the shortest path suffix that identifies the file within its own dataset (``ISIC_0012345``
  when names are unique; ``Testing/glioma/image(1)`` when the same file name recurs in several
  folders), extension ignored (pretraining sets often re-encode images), against the same
  suffix of every manifest path;
- **content**: sha256 of the test file against the manifest's sha256 (and of the files found under
  ``--pretrain-root`` when the manifest has no hashes);
- **patient**: when the task groups cases by patient/volume, the group id as a run of whole name parts
  (split at ``_ - . /`` and spaces) of a manifest path. Group ids that are too generic to mean one
  patient (shorter than 5 characters, or digits only) are not checked, and the report says so.

The findings go to ``<results>/_audit/<suite>/<manifest>-<sha12>.json``; the leaderboard
footnotes the affected task columns (only the audited encoder's cells when it is known).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from lvmbench.errors import UserError
from lvmbench.kit.files import sha256_file
from lvmbench.results import write_atomic

AUDIT_DIR = "_audit"
SEP = re.compile(r"[_\-.\s]+")
MAX_SUFFIX = 4
EXTS = (".nii.gz", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".dcm", ".dicom", ".nii", ".mha", ".mhd", ".nrrd", ".npy", ".npz")


@dataclass(frozen=True)
class Entry:
    path: str  # as listed (a shard member is "<shard>::<member>")
    sha256: str | None = None


@dataclass
class Manifest:
    name: str
    sha256: str
    format: str
    entries: list[Entry]
    encoder: str | None = None  # name@sha12 of the encoder trained on it, when the manifest says


def _sha_bytes(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def read_manifest(path: Path) -> Manifest:
    if path.is_dir():
        lists = sorted(path.glob("*/file_list.txt"))
        if not lists:
            raise UserError("no */file_list.txt in this folder", path=path, fix="pass a manifest file, or LVM-Med's lvm-med-training-data folder")
        entries, blob = [], b""
        for f in lists:
            raw = _read(f)
            blob += raw
            entries += _lines(raw, f, prefix=f.parent.name)
        return Manifest(path.name, _sha_bytes(blob), "lvm-med file_list.txt", entries)
    raw = _read(path)
    sha = _sha_bytes(raw)
    if path.suffix.lower() != ".json":
        return Manifest(path.parent.name + "-" + path.stem if path.name == "file_list.txt" else path.stem, sha, "file list", _lines(raw, path))
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise UserError(f"manifest is not valid JSON ({str(e)[:80]})", path=path, fix="pass pretrain.json from `lvmbench pretrain`, a JSON list of paths, or a file_list.txt") from None
    encoder = None
    items: Any = doc
    if isinstance(doc, dict) and isinstance(doc.get("data"), dict) and "manifest" in doc["data"]:
        items = doc["data"]["manifest"]
        enc_sha = (doc.get("output") or {}).get("encoder_sha256")
        enc_name = (doc.get("encoder") or {}).get("name")
        if enc_sha and enc_name:
            encoder = f"{enc_name}@{enc_sha[:12]}"
    elif isinstance(doc, dict):
        items = next((doc[k] for k in ("files", "entries", "images", "manifest") if isinstance(doc.get(k), list)), None)
    if not isinstance(items, list):
        raise UserError("manifest JSON holds no list of files", path=path, fix="expected pretrain.json (data.manifest), a list, or {\"files\": [...]}")
    entries = []
    for i, it in enumerate(items):
        if isinstance(it, str):
            entries.append(Entry(it))
        elif isinstance(it, dict) and isinstance(it.get("path") or it.get("file"), str):
            p = it.get("path") or it.get("file")
            if it.get("member"):
                p = f"{p}::{it['member']}"
            entries.append(Entry(p, it.get("sha256")))
        else:
            raise UserError(f"manifest entry {i} is neither a path nor {{'path': ..., 'sha256': ...}}", path=path, fix="fix or regenerate the manifest")
    if not entries:
        raise UserError("manifest lists no files", path=path, fix="pass the manifest of a pretraining run that read data")
    return Manifest(path.stem, sha, "lvmbench pretrain manifest" if encoder else "json", entries, encoder)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read the manifest ({e.strerror})", path=path, fix="pass an existing, readable --pretrain-manifest") from None


def _lines(raw: bytes, path: Path, prefix: str = "") -> list[Entry]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("file list is not UTF-8 text", path=path, fix="pass a text file with one path per line") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(Entry(f"{prefix}/{line}" if prefix else line))
    if not out and not prefix:
        raise UserError("file list is empty", path=path, fix="pass a file with one path per line")
    return out


# ---------------------------------------------------------------- keys


def _parts(path: str) -> list[str]:
    """Path components (a shard member counts as a path of its own), last one without extension."""
    p = path.split("::")[-1].replace("\\", "/")
    parts = [x for x in PurePosixPath(p).parts if x not in ("/", ".", "")]
    parts = [x.lower() for x in parts]
    if parts:
        parts[-1] = strip_ext(parts[-1])
    return parts


def strip_ext(name: str) -> str:
    """Drop an image/volume extension only (DICOM names like 1.2.840.1133 keep their dots)."""
    for ext in EXTS:
        if name.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def suffix_key(path: str, k: int) -> tuple[str, ...] | None:
    parts = _parts(path)
    return tuple(parts[-k:]) if len(parts) >= k else None


def identifying_suffix(files: list[str]) -> dict[str, tuple[str, ...]]:
    """For each file of a dataset, its shortest path suffix no other file of the dataset shares."""
    counts: list[dict[tuple[str, ...], int]] = []
    for k in range(1, MAX_SUFFIX + 1):
        c: dict[tuple[str, ...], int] = defaultdict(int)
        for f in files:
            key = suffix_key(f, k)
            if key is not None:
                c[key] += 1
        counts.append(c)
    out = {}
    for f in files:
        for k in range(1, MAX_SUFFIX + 1):
            key = suffix_key(f, k)
            if key is None:
                break
            if counts[k - 1][key] == 1 or k == MAX_SUFFIX:
                out[f] = key
                break
    return out


def name_tokens(path: str) -> set[str]:
    """Every run of consecutive name parts of every component: 'ct_train_1005_slice3' gives
    'ct_train_1005', 'train_1005', '1005_slice3' ... (compared after the same splitting)."""
    out: set[str] = set()
    for comp in _parts(path):
        bits = [b for b in SEP.split(comp) if b]
        for i in range(len(bits)):
            for j in range(i + 1, len(bits) + 1):
                out.add("_".join(bits[i:j]))
    return out


def distinctive(group: str) -> bool:
    return len(group) >= 5 and not group.isdigit()


# ---------------------------------------------------------------- audit


def audit_task(task: Any, data: Any, manifest: Manifest, extra_hashes: dict[str, str] | None = None) -> dict[str, Any]:
    """Findings for one task: test cases whose file name, content or patient appears in the manifest."""
    all_files = sorted({f for c in data.cases for f in (c.files or (c.image,))})
    ident = identifying_suffix(all_files)
    lengths = sorted({len(k) for k in ident.values()})
    by_suffix: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for e in manifest.entries:
        for k in lengths:
            key = suffix_key(e.path, k)
            if key is not None:
                by_suffix[key].append(e.path)
    hashes: dict[str, str] = {e.sha256.lower(): e.path for e in manifest.entries if e.sha256}
    hashes.update(extra_hashes or {})
    test = sorted(data.split.test, key=lambda c: c.id)
    by_name, by_hash, by_patient = [], [], []
    for c in test:
        for f in c.files or (c.image,):
            hits = by_suffix.get(ident.get(f, ()), [])
            if hits:
                by_name.append({"case": c.id, "file": f, "entry": hits[0], "entries": len(hits)})
            if hashes:
                try:
                    h = sha256_file(data.root / f)
                except OSError:
                    continue
                if h in hashes:
                    by_hash.append({"case": c.id, "file": f, "entry": hashes[h], "sha256": h})
    grouped = task.split.group_by in ("patient", "volume") and any(c.group != c.id for c in data.cases)
    patient_note = "not applicable: the task's cases are not grouped by patient/volume"
    if grouped:
        groups = sorted({c.group for c in test})
        checkable = [g for g in groups if distinctive(g)]
        tokens: dict[str, str] = {}
        for e in manifest.entries:
            for t in name_tokens(e.path):
                tokens.setdefault(t, e.path)
        hit_groups = {}
        for g in checkable:
            key = "_".join(b for b in SEP.split(g.lower()) if b)
            if key in tokens:
                hit_groups[g] = tokens[key]
        by_patient = [{"case": c.id, "group": c.group, "entry": hit_groups[c.group]} for c in test if c.group in hit_groups]
        skipped = len(groups) - len(checkable)
        patient_note = f"checked {len(checkable)} of {len(groups)} test patients/volumes" + (
            f"; {skipped} with ids too generic to match by name (e.g. '{next(g for g in groups if not distinctive(g))}')" if skipped else ""
        )
    affected = sorted({m["case"] for m in by_name + by_hash + by_patient})
    return {
        "task": task.id,
        "test_cases": len(test),
        "test_groups": len({c.group for c in test}),
        "affected_cases": len(affected),
        "counts": {"name": len({m["case"] for m in by_name}), "content": len({m["case"] for m in by_hash}), "patient": len({m["case"] for m in by_patient})},
        "patient_check": patient_note,
        "content_check": "done" if hashes else "not possible: the manifest has no sha256 (pass --pretrain-root to hash the listed files)",
        "by_name": by_name,
        "by_content": by_hash,
        "by_patient": by_patient,
    }


def hash_listed(manifest: Manifest, root: Path) -> dict[str, str]:
    """sha256 of every listed file found under ``root`` (for manifests without hashes)."""
    out = {}
    for e in manifest.entries:
        p = root / e.path.split("::")[0]
        if p.is_file():
            out[sha256_file(p)] = e.path
    return out


def audit_path(results: Path, suite: str, manifest: Manifest) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", manifest.name)[:60]
    return results / AUDIT_DIR / suite / f"{safe}-{manifest.sha256[:12]}.json"


def run_audit(
    manifest: Manifest,
    suite: str,
    task_data: Callable[[Any], Any],
    tasks: list[Any],
    results: Path,
    encoder: str | None = None,
    pretrain_root: Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, dict[str, Any]]:
    """Audit every task (``task_data(task)`` loads its data or raises ``UserError``) and write the report."""
    extra = hash_listed(manifest, pretrain_root) if pretrain_root else None
    findings, skipped = [], []
    for t in tasks:
        try:
            data = task_data(t)
        except UserError as e:
            skipped.append({"task": t.id, "reason": str(e)})
            log(f"skip  {t.id}: {e}")
            continue
        f = audit_task(t, data, manifest, extra)
        findings.append(f)
        c = f["counts"]
        log(f"{'LEAK' if f['affected_cases'] else 'ok  '}  {t.id}: {f['affected_cases']}/{f['test_cases']} test cases in the pretraining data (name {c['name']}, content {c['content']}, patient {c['patient']})")
    report = {
        "kind": "leakage-audit",
        "schema": 1,
        "suite": suite,
        "manifest": {"name": manifest.name, "sha256": manifest.sha256, "format": manifest.format, "entries": len(manifest.entries)},
        "encoder": encoder or manifest.encoder,
        "tasks": findings,
        "skipped": skipped,
    }
    path = audit_path(results, suite, manifest)
    write_atomic(path, json.dumps(report, indent=1, sort_keys=True) + "\n")
    return path, report


def load_audits(results: Path, suite: str, warn: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every audit report of a suite in the results tree (sorted by file name)."""
    folder = results / AUDIT_DIR / suite
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            if doc.get("kind") != "leakage-audit":
                raise ValueError("not an audit report")
            out.append(doc)
        except (OSError, ValueError) as e:
            warn(f"skip  {p}: unreadable audit report ({str(e)[:80]}); fix: delete it and rerun `lvmbench audit`")
    return out
