"""`recursive lineage dashboard RUN_DIR [RUN_DIR ...] -o report.html`: one self-contained
HTML file that opens offline (inline CSS, inline SVG and a little vanilla JS; no fonts,
scripts or images from anywhere else).

It shows, for one lineage or several overlaid (e.g. proposer=self against proposer=random):
the lineage tree (generations and attempts, promoted / rejected / failed, the gate's
reasons on hover), metrics against generation and against parameter count, safety
metrics with their gate bounds, and the plan diff between each attempt and its parent
(hyperparameters, architecture, mixture, recipe code). Everything is read from the run
directories, the source of truth; nothing from wandb.

This module collects the data and assembles the page (CSS, JS, summary table); the charts
and the lineage tree are drawn in `svg`, the plan diff pane in `plan_diff`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recursive import lineage
from recursive.io import atomic_write_text, read_json
from recursive.dashboard.svg import COLORS, STATUS_FILL, _fmt, band_chart, chart, esc, metric_chart, tree_svg
from recursive.dashboard.plan_diff import plan_diff

__all__ = ["collect", "render", "summary_table", "write_dashboard", "chart", "metric_chart", "tree_svg",
           "plan_diff", "esc", "COLORS", "STATUS_FILL"]


# ---------------------------------------------------------------------- data
def collect(run_dir: Path, index: int) -> dict[str, Any]:
    """One lineage as the dashboard needs it, read from its run directory."""
    run_dir = Path(run_dir)
    info = lineage.describe(run_dir)
    items = []
    for rec in lineage.attempts(run_dir):
        at = rec.where(run_dir)
        items.append({
            "id": rec.id, "generation": rec.generation, "attempt": rec.attempt, "status": rec.status,
            "parent": rec.parent, "params": rec.params, "proposer": rec.proposer,
            "code_origin": rec.code_origin, "reasons": rec.reasons, "criteria": rec.gate.get("criteria") or [],
            "metrics": lineage.flat_metrics(rec.metrics), "timings": rec.timings or {},
            "plan": read_json(at.plan) if at.plan.exists() else None,
            "recipe": at.recipe.read_text(encoding="utf-8") if at.recipe.exists() else None,
        })
    stop = lineage.last_stop(run_dir)
    return {**info, "index": index, "color": COLORS[index % len(COLORS)], "attempts": items,
            "stopped": stop.get("reason") if stop else None}


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


def over_seeds(run_dirs: list[Path], lins: list[dict]) -> str:
    """Lineages that share a proposer (`recursive experiment compare`: one per seed): per
    proposer the held-out loss per generation as its mean over seeds with the 95% bootstrap
    band, and the statistics table of report.json, computed by the same functions
    (recursive/compare.py). Empty when no proposer has two lineages."""
    from recursive import compare
    order = list(dict.fromkeys(lin["proposer"] for lin in lins))
    if not any(sum(lin["proposer"] == p for lin in lins) > 1 for p in order):
        return ""
    gens = max((read_json(Path(rd) / lineage.CONFIG_FILE).get("lineage") or {}).get("generations", 0)
               if (Path(rd) / lineage.CONFIG_FILE).exists() else 0 for rd in run_dirs)
    gens = max([gens] + [it["generation"] for lin in lins for it in lin["attempts"]])
    curves: dict[str, dict] = {p: {} for p in order}
    for rd, lin in zip(run_dirs, lins):
        seed = ((read_json(Path(rd) / lineage.CONFIG_FILE).get("lineage") or {}).get("seed", lin["index"])
                if (Path(rd) / lineage.CONFIG_FILE).exists() else lin["index"])
        curves[lin["proposer"]][seed if seed not in curves[lin["proposer"]] else f"{seed}@{lin['index']}"] = \
            compare.loss_curve(Path(rd), gens)[0]
    stats = compare.statistics(curves, gens, order[0])
    groups = [{"index": i, "color": COLORS[i % len(COLORS)], "label": f"proposer={p} ({len(curves[p])} seeds)",
               "rows": [{"generation": r["generation"], **r["loss"][p]} for r in stats]} for i, p in enumerate(order)]
    head = ["gen"] + [f"{p}: mean [95% CI] (n)" for p in order]
    head += [f"P({order[0]} &lt; {p}) [95% CI]" for p in order[1:]] + [f"Wilcoxon p, {order[0]} &lt; {p}" for p in order[1:]]
    rows = []
    for r in stats:
        cells = [str(r["generation"])]
        for p in order:
            v = r["loss"][p]
            cells.append("-" if not v["n"] else f"{v['mean']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}] ({v['n']})")
        for p in order[1:]:
            v = r["vs"][p]
            cells.append("-" if v["p_less"] is None else f"{v['p_less']:.2f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]")
        cells += ["-" if r["vs"][p]["wilcoxon_p"] is None else f"{r['vs'][p]['wilcoxon_p']:.4f}" for p in order[1:]]
        rows.append("<tr>" + "".join(f'<td class="num">{esc(c)}</td>' for c in cells) + "</tr>")
    return ('<section id="over-seeds"><h2>Held-out loss over seeds, per proposer</h2><p class="note">line: mean over '
            "seeds of heldout_loss.mean of the promoted model; band: its 95% bootstrap interval; a stopped lineage "
            "carries its last promoted model's loss forward. Statistics as in `recursive experiment compare` "
            f"(report.json \"method\").</p><div class=\"cols\">{band_chart(groups, compare.METRIC, 'heldout_loss.mean over seeds')}"
            '<table class="over-seeds"><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows)
            + "</table></div></section>")


def render(run_dirs: list[Path], title: str | None = None) -> str:
    run_dirs = [Path(p) for p in run_dirs]
    lins = [collect(rd, i) for i, rd in enumerate(run_dirs)]
    every = [it for lin in lins for it in lin["attempts"]]
    keys = sorted({k for it in every for k in it["metrics"]})
    losses = [k for k in keys if k.startswith("heldout_loss.") and k not in ("heldout_loss.mean", "heldout_loss.safety")]
    by_gen = ["params", "heldout_loss.mean"] + losses + [k for k in ("arithmetic.exact_match", "proposer.valid_plan_rate",
                                                                     "proposer.win_rate_vs_random", "train.final_loss")
                                                           if k in keys]
    by_params = [k for k in ("heldout_loss.mean", "arithmetic.exact_match", "proposer.valid_plan_rate") if k in keys]
    safety = lineage.safety_metrics([_unflatten(it["metrics"]) for it in every])
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
    o.append(over_seeds(run_dirs, lins))
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
    """Write the dashboard to `out` (to `out/lineage.html` where `out` is an existing
    directory) and return the path written."""
    out = Path(out)
    if out.is_dir():
        out = out / "lineage.html"
    atomic_write_text(out, render(run_dirs, title))
    return out
