"""Inline CSS and JavaScript of the HTML leaderboard (kept as strings so the page is one file and
the package needs no data files). The script reads the JSON in ``#lb-data`` and builds every
element with DOM calls (``textContent``, never ``innerHTML``), so names in results cannot inject
markup."""

CSS = r"""
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;color:#1f2328;background:#fff}
h1{font-size:1.5em;margin:0 0 .5em}h2{font-size:1.25em;margin:1.6em 0 .4em;border-bottom:1px solid #d0d7de}
h3{font-size:1.05em;margin:1.2em 0 .3em}
#controls{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #d0d7de;z-index:2}
#controls label{margin-right:1.2em}
.legend,.note,.caption,.metrics,footer{color:#57606a;font-size:.9em;max-width:80em}
table{border-collapse:collapse;margin:.4em 0 .8em}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap;vertical-align:top}
th:first-child,td:first-child,th.text,td.text{text-align:left}
th{background:#f6f8fa;cursor:pointer;user-select:none}
th[aria-sort=descending]::after{content:" \25BE"}th[aria-sort=ascending]::after{content:" \25B4"}
tr.reported td{color:#57606a;font-style:italic}tr.older td{color:#8c959f}
td.cell{position:relative}td.cell a{color:inherit;text-decoration:none;border-bottom:1px dotted #8c959f}
td .sd{color:#57606a;font-size:.85em}
td .pop{display:none;position:absolute;right:0;top:100%;z-index:3;background:#fff;border:1px solid #8c959f;
  padding:6px 8px;text-align:left;box-shadow:0 2px 6px rgba(0,0,0,.15);font-style:normal;color:#1f2328}
td.cell:hover .pop,td.cell:focus-within .pop{display:block}
td .pop a{color:#0969da}
.hidden{display:none}
"""

JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("lb-data").textContent);

  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { e.textContent = attrs[k]; } else if (k === "cls") { e.className = attrs[k]; } else { e.setAttribute(k, attrs[k]); }
    });
    (kids || []).forEach(function (c) { if (c !== null && c !== undefined) { e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); } });
    return e;
  }
  function fmt(v) { return v === null || v === undefined ? "\u2013" : v.toFixed(2); }

  function cellTd(c) {
    if (!c) { return el("td", {text: "\u2013"}); }
    if (c.moved) { return el("td", {text: "\u2193", title: "not the paper's protocol (shown below the table): " + c.moved}); }
    var td = el("td", {cls: "cell", "data-v": String(c.v)});
    if (c.reported) {
      td.textContent = fmt(c.v) + (c.std !== null && c.std !== undefined ? " \u00b1 " + fmt(c.std) : "");
      td.title = "reported: " + c.reported;
      return td;
    }
    var main = el("a", {href: c.seeds[0].href, text: fmt(c.v)});
    td.appendChild(c.bold ? el("strong", {}, [main]) : main);
    if (c.std !== null) { td.appendChild(el("span", {cls: "sd", text: " \u00b1 " + fmt(c.std)})); }
    if (c.approx) { td.appendChild(document.createTextNode("\u2021")); }
    if (c.marks) { td.appendChild(el("sup", {text: c.marks})); }
    var ci = c.lo === null ? "no CI (no per-case records)" : "95% CI [" + fmt(c.lo) + ", " + fmt(c.hi) + "] (" + c.method + ")";
    var lines = [c.metric + " x100, mean over " + c.n + " seed(s)" + (c.std !== null ? " \u00b1 " + fmt(c.std) : ""), ci];
    var pop = el("div", {cls: "pop"}, [el("div", {text: lines[0]}), el("div", {text: lines[1]})]);
    c.seeds.forEach(function (s) {
      lines.push("seed " + s.seed + ": " + fmt(s.v));
      pop.appendChild(el("div", {}, ["seed " + s.seed + ": " + fmt(s.v) + " ", el("a", {href: s.href, text: "result JSON"})]));
    });
    td.title = lines.join("\n");
    td.appendChild(pop);
    return td;
  }

  function sortable(table) {
    var ths = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(ths, function (th, idx) {
      th.addEventListener("click", function () {
        var desc = th.getAttribute("aria-sort") !== "descending";
        Array.prototype.forEach.call(ths, function (o) { o.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", desc ? "descending" : "ascending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var numeric = th.getAttribute("data-kind") === "num";
        var lower = th.getAttribute("data-lower") === "1";  // mean rank: smaller is better
        rows.sort(function (a, b) {
          var x = a.cells[idx], y = b.cells[idx];
          if (numeric) {
            var vx = x.hasAttribute("data-v") ? parseFloat(x.getAttribute("data-v")) : NaN;
            var vy = y.hasAttribute("data-v") ? parseFloat(y.getAttribute("data-v")) : NaN;
            var mx = isNaN(vx), my = isNaN(vy);
            if (mx || my) { return mx && my ? a.rowIndex - b.rowIndex : (mx ? 1 : -1); }  // missing last
            var d = (desc !== lower) ? vy - vx : vx - vy;
            return d !== 0 ? d : a.rowIndex - b.rowIndex;
          }
          var t = x.textContent.localeCompare(y.textContent);
          return (desc ? -t : t) || a.rowIndex - b.rowIndex;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
    return table;
  }

  function header(names, kinds) {
    return el("thead", {}, [el("tr", {}, names.map(function (n, i) {
      var k = kinds[i];
      var th = el("th", {text: n, "data-kind": k === "text" ? "text" : "num", cls: k === "text" ? "text" : ""});
      if (k === "lower") { th.setAttribute("data-lower", "1"); }
      return th;
    }))]);
  }

  function summaryTable(s) {
    var names = ["encoder", "mean rank", "tasks"].concat(s.families_summary);
    var kinds = ["text", "lower", "text"].concat(s.families_summary.map(function () { return "num"; }));
    var body = el("tbody", {}, s.summary.map(function (r) {
      var tds = [el("td", {text: r.row}), el("td", r.rank === null ? {text: "\u2013"} : {text: fmt(r.rank), "data-v": String(r.rank)}), el("td", {text: r.tasks})];
      r.families.forEach(function (f) { tds.push(el("td", f.v === null ? {text: f.text} : {text: f.text, "data-v": String(f.v)})); });
      return el("tr", {cls: r.kind}, tds);
    }));
    return sortable(el("table", {cls: "summary"}, [header(names, kinds), body]));
  }

  function familyTable(t) {
    var names = ["encoder", "protocol"].concat(t.tasks.map(function (x) { return x.id + x.mark; }));
    var kinds = ["text", "text"].concat(t.tasks.map(function () { return "num"; }));
    var body = el("tbody", {}, t.rows.map(function (r) {
      var tr = el("tr", {cls: r.kind, "data-protocols": r.protocols.join(" ")}, [el("td", {text: r.row}), el("td", {cls: "text", text: r.protocol})]);
      r.cells.forEach(function (c) { tr.appendChild(cellTd(c)); });
      return tr;
    }));
    return sortable(el("table", {cls: "family-table"}, [header(names, kinds), body]));
  }

  var app = document.getElementById("app");
  app.textContent = "";
  app.appendChild(el("details", {cls: "legend"}, [el("summary", {text: "How to read the tables"}), el("p", {text: data.legend})]));
  var families = {}, protocols = {}, metrics = {};
  data.suites.forEach(function (s) {
    var sec = el("section", {cls: "suite", "data-suite": s.name}, [el("h2", {text: s.title})]);
    if (s.caption) { sec.appendChild(el("p", {cls: "caption", text: s.caption})); }
    sec.appendChild(summaryTable(s));
    s.views.forEach(function (v) {
      if (v.metric) { metrics[v.metric] = v.label; }
      v.families.forEach(function (f) {
        families[f.key] = f.title;
        var title = f.title + " \u2014 " + s.name + (v.metric ? ", in " + v.metric : "");
        var div = el("div", {cls: "family", "data-family": f.key, "data-metric": v.metric}, [el("h3", {text: title})]);
        f.tables.forEach(function (t) {
          t.rows.forEach(function (r) { r.protocols.forEach(function (p) { protocols[p] = 1; }); });
          if (t.caption) { div.appendChild(el("p", {cls: "caption", text: t.caption})); }
          div.appendChild(el("p", {cls: "metrics", text: t.metrics}));
          div.appendChild(familyTable(t));
        });
        sec.appendChild(div);
      });
    });
    s.notes.forEach(function (n) { sec.appendChild(el("p", {cls: "note", text: n})); });
    app.appendChild(sec);
  });

  function select(id, label, options, first) {
    var s = el("select", {id: id}, [el("option", {value: "", text: first || "all"})].concat(options.map(function (o) { return el("option", {value: o[0], text: o[1]}); })));
    s.addEventListener("change", apply);
    return el("label", {}, [label + " ", s]);
  }
  var controls = document.getElementById("controls");
  controls.appendChild(select("filter-suite", "suite", data.suites.map(function (s) { return [s.name, s.name]; })));
  controls.appendChild(select("filter-family", "family", Object.keys(families).map(function (k) { return [k, families[k]]; })));
  controls.appendChild(select("filter-protocol", "protocol", Object.keys(protocols).sort().map(function (p) { return [p, p]; })));
  // the metric switch: each column's primary metric (the default), or one metric in every column
  controls.appendChild(select("filter-metric", "metric", Object.keys(metrics).sort().map(function (m) { return [m, metrics[m]]; }), "each column's primary"));

  function apply() {
    var suite = document.getElementById("filter-suite").value;
    var family = document.getElementById("filter-family").value;
    var protocol = document.getElementById("filter-protocol").value;
    var metric = document.getElementById("filter-metric").value;
    document.querySelectorAll("section.suite").forEach(function (s) { s.classList.toggle("hidden", !!suite && s.getAttribute("data-suite") !== suite); });
    document.querySelectorAll("div.family").forEach(function (d) {
      var rows = d.querySelectorAll("tbody tr");
      var shown = 0;
      rows.forEach(function (r) {
        var keep = !protocol || r.getAttribute("data-protocols").split(" ").indexOf(protocol) >= 0;
        r.classList.toggle("hidden", !keep);
        shown += keep ? 1 : 0;
      });
      d.classList.toggle("hidden", (!!family && d.getAttribute("data-family") !== family) || d.getAttribute("data-metric") !== metric || shown === 0);
    });
  }
  apply();

  var foot = document.getElementById("footer");
  foot.appendChild(el("p", {}, ["Generated by lvmbench leaderboard from the results folder ", el("code", {text: data.results_as_given}),
    " (cells link to its result JSON files as ", el("code", {text: data.results_link}), ", relative to this page: keep the page and that folder",
    " together, locally or when publishing both, e.g. on GitHub Pages)."]));
})();
"""
