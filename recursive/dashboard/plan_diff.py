"""The dashboard's plan diff pane: for one attempt, its hyperparameters, architecture and data
mixture side by side with its parent's, the gate's criteria, and the recipe code diff.
"""

from __future__ import annotations

import difflib
from typing import Any

from recursive.dashboard.svg import _fmt, esc
from recursive.wandb_log import criterion_against, criterion_metric


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
