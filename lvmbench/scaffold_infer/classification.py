"""Classification layouts: a table naming the images (``manifest``) or one folder per class."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from lvmbench.data.readers.tables import TABLE_SUFFIXES, FileIndex, Table, read_table
from lvmbench.errors import UserError
from lvmbench.scaffold_infer.common import GROUP_NAMES, IMAGE_EXT, LABEL_NAMES, SPLIT_WORDS, Inferred, natural


def tables(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES and p.suffix.lower() != ".txt")


def image_column(table: Table, index: FileIndex, root: Path) -> tuple[str, str] | None:
    """(column, image option): a column whose values name image files, as the column itself when
    they are paths from the dataset folder, else a template that adds their folder and extension."""
    for col in table.columns:
        values = [r[col] for r in table.rows if r[col]][:30]
        if not values:
            continue
        direct = sum(index.find(v) is not None for v in values)
        if direct >= max(1, int(0.8 * len(values))):
            return col, col
        dirs, exts, hits = Counter(), Counter(), 0
        for v in values:
            name = v.replace("\\", "/").rsplit("/", 1)[-1]
            for e in ("", *IMAGE_EXT, *(x.upper() for x in IMAGE_EXT)):
                found = index.by_name.get(name + e)
                if found:
                    hits += 1
                    dirs[str(Path(found[0]).parent)] += 1
                    exts[e] += 1
                    break
        if hits < max(1, int(0.8 * len(values))) or any("/" in v for v in values):
            continue
        ext = exts.most_common(1)[0][0]
        folders = sorted(dirs)
        folder = folders[0] if len(folders) == 1 else os.path.commonprefix(folders) + "*"
        return col, ("" if folder in (".", "") else folder + "/") + "{" + col + "}" + ext
    return None


def _names_a_file(values: list[str], index: FileIndex) -> bool:
    for v in values:
        name = v.replace("\\", "/").rsplit("/", 1)[-1]
        if index.find(v) is not None or any(name + e in index.by_name for e in ("", *IMAGE_EXT)):
            return True
    return False


def pick(table: Table, names: tuple[str, ...], ok) -> str | None:
    by_name = sorted(table.columns, key=lambda c: (c.lower() not in names, table.columns.index(c)))
    for c in by_name:
        if c.lower() in names and ok(c):
            return c
    return None


def classification(root: Path) -> Inferred:
    index = None
    for path in tables(root):
        try:
            table = read_table(path)
        except UserError:
            continue
        if not table.rows:
            continue
        index = index or FileIndex(root, IMAGE_EXT)
        headerless = _names_a_file(table.columns, index)
        if headerless:  # the first row is data (FGADR's grading CSV): columns become col1, col2, ...
            table = read_table(path, header=False)
        hit = image_column(table, index, root)
        if hit is None:
            continue
        col, template = hit
        rest = [c for c in table.columns if c != col]
        n = len(table.rows)
        distinct = {c: len({r[c] for r in table.rows}) for c in rest}
        inf = Inferred("manifest", {"table": path.name, **({"header": False} if headerless else {}), "image": template}, [], found=[f"table {path.name}{' (no header row)' if headerless else ''}: images in column '{col}'"])
        # rows that name an image: a legend or footer row (notes under the table) names none
        image_rows = [r for r in table.rows if r[col] and _names_a_file([r[col]], index)]
        hot = [c for c in rest if image_rows and all(r[c] in ("0", "1", "0.0", "1.0") for r in image_rows)]
        split_col = next((c for c in rest if {r[c].lower() for r in image_rows} and {r[c].lower() for r in image_rows} <= set(SPLIT_WORDS)), None)
        label = pick(table, LABEL_NAMES, lambda c: 2 <= distinct[c] <= 100)
        if label is None:
            label = next((c for c in rest if 2 <= distinct[c] <= min(50, n // 2) and c != split_col and c not in hot), None)
        if label is None and len(hot) >= 2 and all(sum(float(r[c]) for c in hot) == 1 for r in image_rows[:200]):
            inf.options["label_columns"] = hot
            inf.classes = list(hot)
            inf.found.append(f"one-hot label columns {', '.join(hot)}")
        elif label is not None:
            inf.options["label"] = label
            skipped = _legend_rows(table, label, col, index)
            if skipped:
                values = sorted({table.rows[i][label] for i in skipped}, key=natural)
                inf.options["skip_labels"] = values
                rows = ", ".join(table.row_name(i) for i in skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
                shown = ", ".join(repr(v) for v in values[:3]) + (" ..." if len(values) > 3 else "")
                inf.found.append(f"{len(skipped)} legend/footer row(s) left out ({rows}: label {shown}, empty or unlike the other rows' labels; data.options.skip_labels)")
            left_out = set(skipped)
            inf.classes = sorted({r[label] for i, r in enumerate(table.rows) if r[label] and i not in left_out}, key=natural)
            inf.found.append(f"labels in column '{label}': {len(inf.classes)} classes")
        else:
            inf.todo.append("set data.options.label (the label column) and the task's classes")
        group = pick(table, GROUP_NAMES, lambda c: 1 < distinct[c] < n)
        if group is not None:
            inf.options["group"] = {"column": group}
            inf.found.append(f"groups (patients/lesions) in column '{group}': {distinct[group]} groups for {n} rows")
        else:
            inf.todo.append("no patient/group column found: each image is its own group; set data.options.group if images share patients")
        if split_col is not None:
            inf.options["split"] = split_col
            values = sorted({r[split_col] for r in image_rows})
            inf.split = {"source": "publisher", "map": {v: SPLIT_WORDS[v.lower()] for v in values}, "val": 0.15, "seed": 0, "group_by": "patient" if group else "case"}
            inf.found.append(f"publisher split in column '{split_col}' ({', '.join(values)})")
        else:
            inf.split = {"source": "rule", "val": 0.15, "test": 0.2, "seed": 0, "group_by": "patient" if group else "case"}
        return inf
    return _class_folders(root)


def _legend_rows(table: Table, label: str, image_col: str, index: FileIndex) -> list[int]:
    """Rows that are no data (a legend, notes or totals under the table): the label cell is empty,
    or its value is rare (one row, or under 1% of the rows) and the row names no image file."""
    counts = Counter(r[label] for r in table.rows)
    rare = max(2, int(0.01 * len(table.rows)))
    out = []
    for i, r in enumerate(table.rows):
        value = r[label]
        if not value.strip() or (counts[value] < rare and not (r[image_col] and _names_a_file([r[image_col]], index))):
            out.append(i)
    return out


def _has_images(folder: Path) -> bool:
    return any(f.suffix.lower() in IMAGE_EXT for f in folder.iterdir() if f.is_file())


def _class_folders(root: Path) -> Inferred:
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    splits = [p for p in subs if p.name.lower() in SPLIT_WORDS and any(q.is_dir() and _has_images(q) for q in p.iterdir())]
    if splits:
        classes = sorted({q.name for s in splits for q in s.iterdir() if q.is_dir() and _has_images(q)}, key=natural)
        inf = Inferred("class_folders", {"splits": [s.name for s in splits]}, classes, found=[f"split folders {', '.join(s.name for s in splits)} holding class folders"])
        mapping = {s.name: SPLIT_WORDS[s.name.lower()] for s in splits}
        inf.split = {"source": "publisher", "map": mapping, "val": 0.15, "seed": 0, "group_by": "case"}
    else:
        classes = [p.name for p in subs if _has_images(p)]
        if len(classes) < 2:
            raise UserError("found neither a table naming the images nor two or more class folders", path=root, fix="point --from at the dataset folder (class folders, or a CSV/XLSX manifest next to the images)")
        inf = Inferred("class_folders", {"splits": []}, sorted(classes, key=natural), found=[f"{len(classes)} class folders"])
        inf.split = {"source": "rule", "val": 0.15, "test": 0.2, "seed": 0, "group_by": "case"}
    inf.todo.append("no patient information in class folders: each image is its own group (split.group_by: case); set data.options.group (regex/file) if images share patients")
    return inf
