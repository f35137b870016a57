"""The HTML leaderboard in a real headless browser (Debian's chromium): the page loads from
file:// without console errors, clicking a column header reorders the rows by value, the family
filter hides the other families and the metric switch shows one metric's tables.

The test never installs anything: without a browser on PATH it is skipped, saying why (CI installs
chromium in ``.ci/run`` before it runs the tests).
The assertions run inside the page (a copy with a test script appended) and write their findings
into the DOM, which ``chromium --headless --dump-dom`` prints.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest
from board_records import records
from builders import write_records

from lvmbench.leaderboard import write

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _find() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = _find()
    if path:
        return path
    # Tests never change the machine: CI installs Debian's chromium (.ci/run); elsewhere this skips.
    pytest.skip("no chromium on PATH: install Debian's chromium package (apt-get install chromium) to run the browser test")


PROBE_HEAD = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push("error: " + e.message); });
(function () { var ce = console.error; console.error = function () { window.__errors.push("console.error: " + Array.prototype.join.call(arguments, " ")); ce.apply(console, arguments); }; })();
</script>"""

PROBE_BODY = """<script>
(function () {
  var out = {errors: window.__errors.slice()};
  try {
    var table = document.querySelector('div.family[data-family="Cls"][data-metric=""] table.family-table');
    var order = function () { return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return [r.cells[0].textContent, r.cells[1].textContent, r.cells[2].getAttribute("data-v")]; }); };
    out.before = order();
    table.tHead.rows[0].cells[2].click();
    out.desc = order();
    table.tHead.rows[0].cells[2].click();
    out.asc = order();
    out.rows = document.querySelectorAll("tbody tr").length;
    var cell = table.tBodies[0].rows[0].cells[2];
    out.title = cell.title;
    out.href = cell.querySelector("a").getAttribute("href");
    var fam = document.getElementById("filter-family");
    fam.value = "Cls";
    fam.dispatchEvent(new Event("change"));
    out.shown = Array.prototype.map.call(document.querySelectorAll('div.family[data-metric=""]'), function (d) { return [d.getAttribute("data-family"), getComputedStyle(d).display !== "none"]; });
    var proto = document.getElementById("filter-protocol");
    proto.value = "knn";
    proto.dispatchEvent(new Event("change"));
    out.visible_protocols = Array.prototype.filter.call(table.tBodies[0].rows, function (r) { return getComputedStyle(r).display !== "none"; }).map(function (r) { return r.cells[1].textContent; });
    out.hidden_views = Array.prototype.filter.call(document.querySelectorAll('div.family:not([data-metric=""])'), function (d) { return getComputedStyle(d).display !== "none"; }).length;
    fam.value = "";
    proto.value = "";
    var metric = document.getElementById("filter-metric");
    metric.value = "accuracy";
    metric.dispatchEvent(new Event("change"));
    out.metric_shown = Array.prototype.filter.call(document.querySelectorAll("div.family"), function (d) { return getComputedStyle(d).display !== "none"; }).map(function (d) { return [d.getAttribute("data-family"), d.getAttribute("data-metric")]; });
    metric.value = "";
    metric.dispatchEvent(new Event("change"));
  } catch (e) { out.exception = String(e); }
  out.errors = window.__errors.slice();
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def test_page_sorts_and_filters_in_a_headless_browser(chromium, tmp_path):
    results = tmp_path / "results"
    write_records(results, records())
    site = tmp_path / "site"
    write(results, tmp_path / "lb.md", warn=lambda s: None, n_boot=200, html=site)
    page = (site / "index.html").read_text(encoding="utf-8")
    probe = site / "probe.html"  # same folder: the same relative links
    probe.write_text(page.replace("<head>", "<head>\n" + PROBE_HEAD, 1).replace("</body>", PROBE_BODY + "\n</body>", 1), encoding="utf-8")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri()]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page did not run its probe (rc {done.returncode}): {done.stderr[-2000:]}"
    out = json.loads(html.unescape(found.group(1)))
    assert "exception" not in out, out.get("exception")
    assert out["errors"] == [], "console errors"
    assert not [ln for ln in done.stderr.splitlines() if "CONSOLE" in ln and ("Uncaught" in ln or "Error" in ln)], done.stderr
    # sorting: first click = best value first, second click = reversed; rows without a value stay last
    linear = lambda rows: [r for r in rows if r[1] == "linear"]  # noqa: E731
    assert [r[0].split()[0] for r in linear(out["before"])] == ["alpha", "mid", "zeta"], "rendered in name order"
    desc = [float(r[2]) for r in out["desc"]]
    assert desc == sorted(desc, reverse=True) and out["desc"] != out["before"]
    assert [float(r[2]) for r in out["asc"]] == sorted(desc)
    # hover text and the link to the cell's result JSON
    assert "95% CI [" in out["title"] and "seed 0:" in out["title"] and "seed 1:" in out["title"]
    assert (site / out["href"]).resolve().is_file()
    # filtering by family hides the other families; by protocol, the other rows
    shown = dict(out["shown"])
    assert shown["Cls"] and not shown["2D seg"]
    # the metric switch: the default shows each column's primary metric only; "accuracy" that view only
    assert out["hidden_views"] == 0
    assert out["metric_shown"] == [["Cls", "accuracy"]]
    assert out["visible_protocols"] == ["knn"] * 3
