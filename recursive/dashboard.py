"""`recursive lineage dashboard RUN_DIR [RUN_DIR ...] -o report.html`: one self-contained
HTML file that opens offline (inline CSS, inline SVG and a little vanilla JS; no fonts,
scripts or images from anywhere else).

It shows, for one lineage or several overlaid (e.g. proposer=self against proposer=random):
the lineage tree (generations and attempts, promoted / rejected / failed, the gate's
reasons on hover), metrics against generation and against parameter count, safety
metrics with their gate bounds, and the plan diff between each attempt and its parent
(hyperparameters, architecture, mixture, recipe code). Everything is read from the run
directories, the source of truth; nothing from wandb.
"""

from __future__ import annotations

import difflib
import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recursive import lineage
from recursive.io import atomic_write_text, read_json
from recursive.wandb_log import criterion_against, criterion_metric

COLORS = ("#1f6feb", "#d4582b", "#2da44e", "#8250df", "#bf8700", "#cf222e", "#0a7f86", "#6e7781")
STATUS_FILL = {"promoted": "#2da44e", "rejected": "#e3a008", "failed": "#cf222e"}
W, H, ML, MR, MT, MB = 380, 230, 56, 14, 26, 40  # chart size and margins


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


# ---------------------------------------------------------------------- data
def collect(run_dir: Path, index: int) -> dict[str, Any]:
    """One lineage as the dashboard needs it, read from its run directory."""
    run_dir = Path(run_dir)
    info = lineage.describe(run_dir)
    items = []
    for rec in lineage.attempts(run_dir):
        g, a = rec["generation"], rec["attempt"]
        d = lineage.attempt_dir(run_dir, g, a)
        gate = rec.get("gate") or {}
        reasons = gate.get("reasons") or ([rec["reason"]] if rec.get("reason") else [])
        items.append({
            "id": lineage.attempt_id(g, a), "generation": g, "attempt": a, "status": rec["status"],
            "parent": rec.get("parent"), "params": rec.get("params"), "proposer": rec.get("proposer"),
            "code_origin": rec.get("code_origin"), "reasons": reasons, "criteria": gate.get("criteria") or [],
            "metrics": lineage.flat_metrics(rec), "timings": rec.get("timings") or {},
            "plan": read_json(d / "plan.json") if (d / "plan.json").exists() else None,
            "recipe": (d / "recipe.py").read_text(encoding="utf-8") if (d / "recipe.py").exists() else None,
        })
    stops = [e for e in lineage.events(run_dir) if e.get("event") == "stopped"]
    return {**info, "index": index, "color": COLORS[index % len(COLORS)], "attempts": items,
            "stopped": stops[-1].get("reason") if stops else None}


# ---------------------------------------------------------------------- charts
def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a == int(a) and a < 1e4:
        return str(int(v))
    return f"{v:.3g}" if a >= 0.01 else f"{v:.2g}"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    t = math.ceil(lo / step) * step
    out = []
    while t <= hi + 1e-12:
        out.append(round(t, 12))
        t += step
    return out


def _log_ticks(lo: float, hi: float) -> list[float]:
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 3, 5):
            v = m * 10 ** e
            if lo <= v <= hi:
                out.append(v)
    return out or [lo, hi]


def chart(title: str, series: list[dict], x_label: str, log_x: bool = False, y_label: str = "",
          integer_x: bool = False, chart_id: str = "") -> str:
    """An SVG line chart. series: {"lineage": i, "color", "label", "points": [(x, y, status, tip)],
    "bounds": [(x, y, tip)]}; lines join promoted points, other attempts are hollow markers,
    bounds are dashed."""
    pts = [(x, y) for s in series for x, y, *_ in s["points"] + s.get("bounds", [])
           if x is not None and y is not None and math.isfinite(y) and (not log_x or x > 0)]
    head = f'<figure class="chart" data-chart="{esc(chart_id or title)}"><figcaption>{esc(title)}</figcaption>'
    if not pts:
        return head + '<p class="empty">no data</p></figure>'
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y0 == y1:
        y0, y1 = y0 - (abs(y0) * 0.1 or 0.5), y1 + (abs(y1) * 0.1 or 0.5)
    pad = (y1 - y0) * 0.08
    y0, y1 = y0 - pad, y1 + pad
    if log_x:
        lx0, lx1 = math.log10(x0), math.log10(x1)
        if lx0 == lx1:
            lx0, lx1 = lx0 - 0.2, lx1 + 0.2
        fx = lambda x: ML + (math.log10(x) - lx0) / (lx1 - lx0) * (W - ML - MR)  # noqa: E731
        xt = _log_ticks(10 ** lx0, 10 ** lx1)
    else:
        if x0 == x1:
            x0, x1 = x0 - 0.5, x1 + 0.5
        if integer_x:
            x0, x1 = x0 - 0.25, x1 + 0.25
        fx = lambda x: ML + (x - x0) / (x1 - x0) * (W - ML - MR)  # noqa: E731
        xt = [t for t in range(math.ceil(x0), math.floor(x1) + 1)] if integer_x else _ticks(x0, x1)
    fy = lambda y: MT + (y1 - y) / (y1 - y0) * (H - MT - MB)  # noqa: E731
    o = [head, f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{esc(title)}">']
    for t in _ticks(y0, y1):
        o.append(f'<line class="grid" x1="{ML}" x2="{W - MR}" y1="{fy(t):.1f}" y2="{fy(t):.1f}"/>'
                 f'<text class="tick" x="{ML - 5}" y="{fy(t) + 3:.1f}" text-anchor="end">{esc(_fmt(t))}</text>')
    for t in xt:
        o.append(f'<line class="grid" y1="{MT}" y2="{H - MB}" x1="{fx(t):.1f}" x2="{fx(t):.1f}"/>'
                 f'<text class="tick" y="{H - MB + 14}" x="{fx(t):.1f}" text-anchor="middle">{esc(_fmt(t))}</text>')
    o.append(f'<text class="axis" x="{(ML + W - MR) / 2:.0f}" y="{H - 6}" text-anchor="middle">{esc(x_label)}</text>')
    if y_label:
        o.append(f'<text class="axis" transform="translate(12 {(MT + H - MB) / 2:.0f}) rotate(-90)" '
                 f'text-anchor="middle">{esc(y_label)}</text>')
    for s in series:
        c, li = s["color"], s["lineage"]
        o.append(f'<g class="series" data-lineage="{li}">')
        bounds = sorted((b for b in s.get("bounds", []) if b[1] is not None), key=lambda b: b[0])
        if bounds:
            o.append(f'<polyline class="bound" stroke="{c}" points="'
                     + " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y, _ in bounds) + '"/>')
            for x, y, tip in bounds:
                o.append(f'<rect class="bound-mark" data-tip="{esc(tip)}" x="{fx(x) - 4:.1f}" y="{fy(y) - 1.5:.1f}" '
                         f'width="8" height="3" fill="{c}"/>')
        good = sorted(((x, y) for x, y, st, _ in s["points"] if st == "promoted" and y is not None
                       and math.isfinite(y) and (not log_x or x > 0)), key=lambda p: p[0])
        if len(good) > 1:
            o.append(f'<polyline class="line" stroke="{c}" points="'
                     + " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in good) + '"/>')
        for x, y, st, tip in s["points"]:
            if y is None or not math.isfinite(y) or (log_x and not x > 0):
                continue
            fill = c if st == "promoted" else "#fff"
            o.append(f'<circle class="pt pt-{esc(st)}" data-tip="{esc(tip)}" cx="{fx(x):.1f}" cy="{fy(y):.1f}" '
                     f'r="{4 if st == "promoted" else 3.5}" fill="{fill}" stroke="{c}"/>')
        o.append("</g>")
    o.append("</svg></figure>")
    return "".join(o)


def _tip(lin: dict, it: dict, metric: str | None = None) -> str:
    parts = [f"{lin['label']}", f"gen {it['generation']} attempt {it['attempt']}: {it['status']}"]
    if metric:
        parts.append(f"{metric} = {_fmt(it['metrics'].get(metric) if metric != 'params' else it['params'])}")
    if it["params"]:
        parts.append(f"params {it['params']:,}")
    parts.append("gate: " + "; ".join(it["reasons"]) if it["reasons"] else "")
    return "\n".join(p for p in parts if p)


def metric_chart(lins: list[dict], metric: str, x: str, title: str | None = None, bounds: bool = False) -> str:
    series = []
    for lin in lins:
        pts, bds = [], []
        for it in lin["attempts"]:
            xv = it["generation"] if x == "generation" else it["params"]
            yv = it["params"] if metric == "params" else it["metrics"].get(metric)
            if xv is None or yv is None:
                continue
            pts.append((xv, float(yv), it["status"], _tip(lin, it, metric)))
            if bounds and it["status"] == "promoted":
                for c in it["criteria"]:
                    if criterion_metric(c) == metric and isinstance(c.get("bound"), (int, float)):
                        bds.append((xv, float(c["bound"]), f"{lin['label']}\ngen {it['generation']}: gate bound "
                                    f"{metric} {c.get('op', '')} {_fmt(c['bound'])} ({criterion_against(c)})"))
        series.append({"lineage": lin["index"], "color": lin["color"], "label": lin["label"], "points": pts,
                       "bounds": bds})
    xl = "generation" if x == "generation" else "parameters (log scale)"
    return chart(title or metric, series, xl, log_x=(x == "params"), integer_x=(x == "generation"),
                 chart_id=f"{metric}@{x}")


# ---------------------------------------------------------------------- lineage tree
def tree_svg(lin: dict) -> str:
    its = lin["attempts"]
    if not its:
        return f'<p class="empty" data-lineage="{lin["index"]}">{esc(lin["label"])}: no decided attempt yet</p>'
    gens = sorted({it["generation"] for it in its})
    rows = max(sum(1 for it in its if it["generation"] == g) for g in gens)
    cw, rh, left, top = 150, 46, 30, 34
    w, h = left + cw * len(gens) + 20, top + rh * rows + 10
    pos = {}
    for gi, g in enumerate(gens):
        for ri, it in enumerate(sorted((it for it in its if it["generation"] == g), key=lambda it: it["attempt"])):
            pos[it["id"]] = (left + gi * cw + 50, top + ri * rh + 16)
    o = [f'<figure class="tree" data-lineage="{lin["index"]}"><figcaption><span class="swatch" '
         f'style="background:{lin["color"]}"></span>{esc(lin["label"])}</figcaption>'
         f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="lineage tree {esc(lin["label"])}">']
    for gi, g in enumerate(gens):
        o.append(f'<text class="gen" x="{left + gi * cw + 50}" y="14" text-anchor="middle">gen {g}</text>')
    for it in its:
        if it["parent"] in pos:
            (x0, y0), (x1, y1) = pos[it["parent"]], pos[it["id"]]
            o.append(f'<path class="edge edge-{esc(it["status"])}" d="M{x0 + 12},{y0} C{x0 + 70},{y0} {x1 - 70},{y1} '
                     f'{x1 - 12},{y1}"/>')
    for it in its:
        x, y = pos[it["id"]]
        key = f'{lin["index"]}:{it["id"]}'
        o.append(f'<g class="node status-{esc(it["status"])}" data-key="{esc(key)}" data-tip="{esc(_tip(lin, it))}" '
                 f'tabindex="0"><circle cx="{x}" cy="{y}" r="11" fill="{STATUS_FILL.get(it["status"], "#999")}"/>'
                 f'<text x="{x}" y="{y + 4}" text-anchor="middle" class="att">{it["attempt"]}</text>'
                 f'<text x="{x + 16}" y="{y + 4}" class="lbl">{esc(_fmt(it["params"]) if it["params"] else it["status"])}'
                 f'</text></g>')
    o.append("</svg>")
    if lin["stopped"]:
        o.append(f'<p class="stopped">stopped: {esc(lin["stopped"])}</p>')
    o.append("</figure>")
    return "".join(o)


# ---------------------------------------------------------------------- plan diff
def _table(title: str, rows: list[tuple[str, Any, Any]], parent_label: str) -> str:
    o = [f'<table class="kv"><caption>{esc(title)}</caption><tr><th></th><th>{esc(parent_label)}</th>'
         f'<th>this attempt</th><th>change</th></tr>']
    for k, pv, cv in rows:
        changed = pv != cv
        ch = ""
        if changed and isinstance(pv, (int, float)) and isinstance(cv, (int, float)) and not isinstance(pv, bool) and pv:
            ch = f"×{cv / pv:.3g}"
        elif changed:
            ch = "changed"
        o.append(f'<tr class="{"changed" if changed else ""}"><th>{esc(k)}</th><td>{esc(_v(pv))}</td>'
                 f'<td>{esc(_v(cv))}</td><td>{esc(ch)}</td></tr>')
    return "".join(o) + "</table>"


def _v(x: Any) -> str:
    return "—" if x is None else (f"{x:.6g}" if isinstance(x, float) else str(x))


def _mixture(pm: dict, cm: dict, parent_label: str) -> str:
    o = [f'<table class="kv mixture"><caption>data mixture</caption><tr><th></th><th>{esc(parent_label)}</th>'
         f'<th>this attempt</th><th></th></tr>']
    for k in sorted(set(pm) | set(cm)):
        pv, cv = pm.get(k), cm.get(k)
        bars = "".join(f'<span class="bar {cls}" style="width:{100 * (v or 0):.1f}px"></span>'
                       for cls, v in (("p", pv), ("c", cv)))
        o.append(f'<tr class="{"changed" if pv != cv else ""}"><th>{esc(k)}</th><td>{esc(_v(pv))}</td>'
                 f'<td>{esc(_v(cv))}</td><td class="bars">{bars}</td></tr>')
    return "".join(o) + "</table>"


def _code_diff(parent: str | None, child: str | None) -> str:
    if child is None:
        return '<p class="empty">no recipe code (the attempt failed before a plan was chosen)</p>'
    if parent is None:
        return f'<details><summary>recipe code ({len(child.splitlines())} lines)</summary><pre class="code">{esc(child)}</pre></details>'
    lines = list(difflib.unified_diff(parent.splitlines(), child.splitlines(), "parent/recipe.py", "recipe.py",
                                      lineterm="", n=2))
    if not lines:
        return '<p class="same">recipe code: identical to the parent\'s</p>'
    cls = lambda ln: "add" if ln.startswith("+") else "del" if ln.startswith("-") else "hunk" if ln.startswith("@@") else ""  # noqa: E731
    body = "\n".join(f'<span class="{cls(ln)}">{esc(ln)}</span>' for ln in lines)
    return f'<pre class="code diff">{body}</pre>'


def _criteria(it: dict) -> str:
    if not it["criteria"]:
        return f'<p class="reasons">{esc("; ".join(it["reasons"]) or "no gate verdict")}</p>'
    o = ['<table class="kv gate"><caption>gate</caption><tr><th>criterion</th><th>metric</th><th>against</th>'
         '<th>value</th><th>bound</th><th></th></tr>']
    for c in it["criteria"]:
        ok = c.get("passed")
        o.append(f'<tr class="{"pass" if ok else "fail"}"><th>{esc(c.get("name"))}</th><td>{esc(criterion_metric(c))}</td>'
                 f'<td>{esc(criterion_against(c))}</td>'
                 f'<td>{esc(_fmt(c.get("value")))}</td><td>{esc(c.get("op", ""))} {esc(_fmt(c.get("bound")))}</td>'
                 f'<td>{"pass" if ok else "FAIL"}</td></tr>')
    return "".join(o) + "</table>"


def plan_diff(lin: dict, it: dict) -> str:
    by_id = {x["id"]: x for x in lin["attempts"]}
    parent = by_id.get(it["parent"]) if it["parent"] else None
    pl, cp = (parent or {}).get("plan") or {}, it["plan"] or {}
    plabel = f"parent {it['parent']}" if parent else "(no parent)"
    head = (f'<h3><span class="swatch" style="background:{lin["color"]}"></span>{esc(lin["label"])}: '
            f'gen {it["generation"]} attempt {it["attempt"]} <span class="badge status-{esc(it["status"])}">'
            f'{esc(it["status"])}</span></h3><p class="meta">parent: {esc(it["parent"] or "none (seed plan)")}; '
            f'proposer {esc(it["proposer"])}; code {esc(it["code_origin"])}; '
            f'params {esc(_fmt(it["params"]))} (parent {esc(_fmt((parent or {}).get("params")))})</p>')
    if not cp:
        return head + _criteria(it)
    hp_keys = sorted(set(pl.get("hparams") or {}) | set(cp.get("hparams") or {}))
    md_keys = sorted(set(pl.get("model") or {}) | set(cp.get("model") or {}))
    body = ['<div class="cols">',
            _table("hyperparameters", [(k, (pl.get("hparams") or {}).get(k), cp["hparams"].get(k)) for k in hp_keys], plabel),
            _table("architecture", [(k, (pl.get("model") or {}).get(k), cp["model"].get(k)) for k in md_keys]
                   + [("params", (parent or {}).get("params"), it["params"])], plabel),
            _mixture((pl.get("data") or {}).get("mixture") or {}, (cp.get("data") or {}).get("mixture") or {}, plabel),
            _criteria(it), "</div>",
            f'<h4>recipe code diff</h4>{_code_diff((parent or {}).get("recipe"), it["recipe"])}']
    if cp.get("rationale"):
        body.insert(0, f'<p class="meta">rationale: <q>{esc(cp["rationale"])}</q></p>')
    return head + "".join(body)


# ---------------------------------------------------------------------- page
CSS = """
*{box-sizing:border-box}body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#fff;border-bottom:1px solid #d0d7de;padding:12px 20px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:0 0 10px}h3{font-size:15px;margin:6px 0}h4{margin:10px 0 4px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:14px 20px;padding:12px 16px}
.legend label{margin-right:16px;cursor:pointer;white-space:nowrap}.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin:0 5px 0 2px;vertical-align:-1px}
.grid-charts{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}figcaption{font-weight:600;font-size:13px}
.chart svg .grid{stroke:#eaeef2}.chart .tick{font-size:10px;fill:#57606a}.chart .axis{font-size:11px;fill:#57606a}
.chart .line{fill:none;stroke-width:2}.chart .bound{fill:none;stroke-width:1.5;stroke-dasharray:5 4;opacity:.8}
.chart .pt,.chart .bound-mark,.node{cursor:pointer}
.tree{display:inline-block;margin:0 18px 10px 0;vertical-align:top}.tree .gen{font-size:12px;fill:#57606a}
.tree .edge{fill:none;stroke:#8c959f;stroke-width:1.5}.tree .edge-rejected,.tree .edge-failed{stroke-dasharray:4 3}
.tree text{pointer-events:none}.tree .att{font-size:11px;fill:#fff;font-weight:700}.tree .lbl{font-size:11px;fill:#1f2328}.node:hover circle,.node.sel circle{stroke:#000;stroke-width:2}
.stopped{color:#cf222e;margin:2px 0}.empty{color:#57606a;font-style:italic}
table{border-collapse:collapse;font-size:12.5px}td,th{border-bottom:1px solid #eaeef2;padding:3px 8px;text-align:left}
table.kv caption{font-weight:600;text-align:left;padding:4px 0}.kv tr.changed{background:#fff8c5}.gate tr.fail{background:#ffebe9}
.cols{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:block;height:5px;margin:1px 0;border-radius:2px}.bar.p{background:#afb8c1}.bar.c{background:#1f6feb}
pre.code{background:#f6f8fa;border:1px solid #d0d7de;padding:8px;overflow:auto;font-size:12px;max-height:420px}
.diff .add{color:#116329;background:#dafbe1;display:block}.diff .del{color:#82071e;background:#ffebe9;display:block}.diff .hunk{color:#8250df;display:block}
.badge{font-size:11px;padding:1px 6px;border-radius:10px;color:#fff}.badge.status-promoted{background:#2da44e}.badge.status-rejected{background:#bf8700}.badge.status-failed{background:#cf222e}
.meta{color:#57606a;margin:2px 0}.diffpane{display:none}.diffpane.on{display:block}
#tooltip{position:fixed;pointer-events:none;background:#1f2328;color:#fff;padding:6px 8px;border-radius:4px;font-size:12px;white-space:pre-line;max-width:420px;display:none;z-index:5}
select{font-size:13px;padding:2px 4px}.note{color:#57606a;font-size:12px}
"""

JS = """
(function(){
  var tip=document.getElementById('tooltip');
  function show(e){var t=e.target.closest&&e.target.closest('[data-tip]');if(!t){tip.style.display='none';return;}
    tip.textContent=t.getAttribute('data-tip');tip.style.display='block';
    var x=(e.clientX||0)+14,y=(e.clientY||0)+14;
    if(e.type==='focusin'){var r=t.getBoundingClientRect();x=r.right+6;y=r.top;}
    tip.style.left=Math.min(x,window.innerWidth-430)+'px';tip.style.top=y+'px';}
  document.addEventListener('mouseover',show);document.addEventListener('mousemove',show);document.addEventListener('focusin',show);
  document.addEventListener('mouseout',function(e){if(e.target.closest&&e.target.closest('[data-tip]'))tip.style.display='none';});
  var sel=document.getElementById('diff-select');
  function pick(key){sel.value=key;document.querySelectorAll('.diffpane').forEach(function(p){p.classList.toggle('on',p.getAttribute('data-key')===key);});
    document.querySelectorAll('.node').forEach(function(n){n.classList.toggle('sel',n.getAttribute('data-key')===key);});}
  sel.addEventListener('change',function(){pick(sel.value);});
  document.querySelectorAll('.node').forEach(function(n){
    function go(){pick(n.getAttribute('data-key'));document.getElementById('plan-diff').scrollIntoView({behavior:'smooth'});}
    n.addEventListener('click',go);n.addEventListener('keydown',function(e){if(e.key==='Enter')go();});});
  document.querySelectorAll('.legend input').forEach(function(cb){cb.addEventListener('change',function(){
    document.body.classList.toggle('hide-'+cb.getAttribute('data-toggle'),!cb.checked);});});
  if(sel.options.length)pick(sel.options[sel.selectedIndex].value);
})();
"""


def summary_table(run_dirs: list[Path], lins: list[dict]) -> str:
    data = lineage.compare_json(run_dirs)
    head = ["lineage", "generations", "attempts", "promoted", "rejected", "failed", "final params", "final loss",
            "loss vs gen 0", "arithmetic", "valid plans", "stopped"]
    o = ['<table class="summary"><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for lin, row in zip(lins, data["lineages"]):
        s = row["summary"]
        fin = s.get("final") or {}
        ch = s.get("loss_change_vs_gen0")
        cells = [s["generations"], s["attempts"], s["promoted"], s["rejected"], s["failed"],
                 f"{s['final_params']:,}" if s.get("final_params") else "-", _fmt(fin.get("heldout_loss.mean")),
                 "-" if ch is None else f"{ch:+.3f}", _fmt(fin.get("arithmetic.exact_match")),
                 _fmt(fin.get("proposer.valid_plan_rate"))]
        o.append(f'<tr data-lineage="{lin["index"]}"><th><span class="swatch" style="background:{lin["color"]}"></span>'
                 f'{esc(lin["label"])}</th>' + "".join(f'<td class="num">{esc(c)}</td>' for c in cells)
                 + f'<td>{esc(s.get("stopped") or "-")}</td></tr>')
    return "".join(o) + "</table>"


def render(run_dirs: list[Path], title: str | None = None) -> str:
    run_dirs = [Path(p) for p in run_dirs]
    lins = [collect(rd, i) for i, rd in enumerate(run_dirs)]
    every = [it for lin in lins for it in lin["attempts"]]
    keys = sorted({k for it in every for k in it["metrics"]})
    losses = [k for k in keys if k.startswith("heldout_loss.") and k not in ("heldout_loss.mean", "heldout_loss.safety")]
    by_gen = ["params", "heldout_loss.mean"] + losses + [k for k in ("arithmetic.exact_match", "proposer.valid_plan_rate",
                                                                     "train.final_loss") if k in keys]
    by_params = [k for k in ("heldout_loss.mean", "arithmetic.exact_match", "proposer.valid_plan_rate") if k in keys]
    safety = lineage.safety_metrics([{"metrics": _unflatten(it["metrics"])} for it in every])
    title = title or "Lineage dashboard: " + " vs ".join(lin["label"] for lin in lins)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    hide_css = "".join(f"body.hide-{i} [data-lineage='{i}']{{display:none}}" for i in range(len(lins)))
    o = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
         '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; '
         'script-src \'unsafe-inline\'; img-src data:">',
         f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>',
         f"<style>{CSS}{hide_css}</style></head><body>",
         f'<header><h1>{esc(title)}</h1><div class="legend">']
    for lin in lins:
        o.append(f'<label><input type="checkbox" checked data-toggle="{lin["index"]}">'
                 f'<span class="swatch" style="background:{lin["color"]}"></span>{esc(lin["label"])}</label>')
    o.append(f'<span class="note">generated {esc(now)} from {len(lins)} run director{"ies" if len(lins) > 1 else "y"}; '
             'filled markers: promoted, hollow: rejected; dashed: gate bounds. Hover for details.</span></div></header>')
    o.append(f'<section id="summary"><h2>Side by side</h2>{summary_table(run_dirs, lins)}</section>')
    o.append('<section id="lineage-tree"><h2>Lineage tree</h2><p class="note">columns are generations, rows are '
             'attempts; green promoted, amber rejected, red failed; dashed edges lead to attempts that were not '
             'promoted. Hover a node for the gate\'s reasons, click it for its plan diff.</p>')
    o += [tree_svg(lin) for lin in lins]
    o.append("</section>")
    o.append('<section id="metrics-generation"><h2>Metrics against generation</h2><div class="grid-charts">')
    o += [metric_chart(lins, m, "generation") for m in by_gen]
    o.append('</div></section><section id="metrics-params"><h2>Metrics against parameter count</h2><div class="grid-charts">')
    o += [metric_chart(lins, m, "params") for m in by_params]
    o.append('</div></section><section id="safety"><h2>Safety metrics and their gate bounds</h2>')
    if safety:
        o.append('<div class="grid-charts">' + "".join(metric_chart(lins, m, "generation", bounds=True) for m in safety)
                 + "</div>")
    else:
        o.append('<p class="empty">no safety metrics recorded in these lineages</p>')
    o.append('</section><section id="plan-diff"><h2>Plan diff: parent → child</h2>'
             '<label>attempt <select id="diff-select">')
    panes = []
    default = None
    for lin in lins:
        for it in lin["attempts"]:
            key = f'{lin["index"]}:{it["id"]}'
            if default is None and it["parent"]:
                default = key
            o.append(f'<option value="{esc(key)}">{esc(lin["label"])} · gen {it["generation"]} attempt '
                     f'{it["attempt"]} ({esc(it["status"])})</option>')
            panes.append(f'<div class="diffpane" data-key="{esc(key)}" data-lineage-pane="{lin["index"]}">'
                         f'{plan_diff(lin, it)}</div>')
    o.append("</select></label>")
    o += panes
    o.append("</section>")
    data = {"lineages": [{k: lin[k] for k in ("label", "run_dir", "name", "proposer", "color", "stopped")}
                         | {"attempts": [{k: v for k, v in it.items() if k != "recipe"} for it in lin["attempts"]]}
                         for lin in lins]}
    o.append('<script type="application/json" id="lineage-data">'
             + json.dumps(data, default=str).replace("</", "<\\/") + "</script>")
    o.append(f'<div id="tooltip" role="tooltip"></div><script>{JS}</script>')
    if default is not None:
        o.append(f'<script>document.getElementById("diff-select").value={json.dumps(default)};'
                 'document.getElementById("diff-select").dispatchEvent(new Event("change"));</script>')
    o.append("</body></html>")
    return "\n".join(o)


def _unflatten(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        node = out
        *path, leaf = k.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def write_dashboard(run_dirs: list[Path], out: Path, title: str | None = None) -> Path:
    out = Path(out)
    atomic_write_text(out, render(run_dirs, title))
    return out
