"""The dashboard's inline SVG: line charts of a metric against generation or parameter count
(`chart`, `metric_chart`, with their tick and number formatting) and the lineage tree
(`tree_svg`), plus the escaping and number formatting every part of the page shares.
Pure functions of the collected lineages: strings in, SVG/HTML strings out.
"""

from __future__ import annotations

import html
import math
from typing import Any

from recursive.wandb_log import criterion_against, criterion_metric

COLORS = ("#1f6feb", "#d4582b", "#2da44e", "#8250df", "#bf8700", "#cf222e", "#0a7f86", "#6e7781")
STATUS_FILL = {"promoted": "#2da44e", "rejected": "#e3a008", "failed": "#cf222e"}
W, H, ML, MR, MT, MB = 380, 230, 56, 14, 26, 40  # chart size and margins


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


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
    "bounds": [(x, y, tip)], "band": [(x, lo, hi)]}; lines join promoted points, other attempts
    are hollow markers, bounds are dashed, a band (an interval over seeds) is a translucent area."""
    band_pts = [(x, y) for s in series for x, lo, hi in s.get("band", []) for y in (lo, hi)]
    pts = [(x, y) for s in series for x, y, *_ in s["points"] + s.get("bounds", [])] + band_pts
    pts = [(x, y) for x, y in pts if x is not None and y is not None and math.isfinite(y) and (not log_x or x > 0)]
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
        band = sorted((b for b in s.get("band", []) if all(v is not None and math.isfinite(v) for v in b[1:])),
                      key=lambda b: b[0])
        if band:
            edge = [f"{fx(x):.1f},{fy(hi):.1f}" for x, _, hi in band] + [f"{fx(x):.1f},{fy(lo):.1f}"
                                                                        for x, lo, _ in reversed(band)]
            o.append(f'<polygon class="band" fill="{c}" fill-opacity="0.18" stroke="{c}" stroke-opacity="0.35" '
                     f'points="{" ".join(edge)}"/>')
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


def band_chart(groups: list[dict], metric: str, title: str) -> str:
    """One series per group of lineages (e.g. per proposer, over seeds): the mean per
    generation as the line, the 95% bootstrap interval of the mean as the band, the seeds'
    values in the tooltip. groups: {"index", "color", "label", "rows": [{"generation", "mean",
    "ci95", "min", "max", "by_seed"}]} (recursive/compare.py statistics)."""
    series = []
    for grp in groups:
        rows = [r for r in grp["rows"] if r.get("mean") is not None]
        tips = {r["generation"]: (f"{grp['label']}\ngen {r['generation']}: mean {_fmt(r['mean'])}, 95% CI "
                                  f"{_fmt(r['ci95'][0])}..{_fmt(r['ci95'][1])}, min..max {_fmt(r['min'])}..{_fmt(r['max'])}"
                                  "\n" + ", ".join(f"seed {k}: {_fmt(v)}" for k, v in r["by_seed"].items()))
                for r in rows}
        series.append({"lineage": f"group-{grp['index']}", "color": grp["color"], "label": grp["label"],
                       "points": [(r["generation"], r["mean"], "promoted", tips[r["generation"]]) for r in rows],
                       "band": [(r["generation"], r["ci95"][0], r["ci95"][1]) for r in rows]})
    return chart(title, series, "generation", integer_x=True, chart_id=f"{metric}@generation-band")


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
