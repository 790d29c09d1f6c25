"""`recursive lineage dashboard` and `compare`, checked as a user would: the CLI writes one
file, a real headless Chromium opens it offline with no console errors and no request
beyond the file itself, and the tree, charts, safety bounds, hover reasons and plan diffs
are on the page. The browser test saves a screenshot."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

CHROMIUM = os.environ.get("RECURSIVE_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "recursive.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def report(toy_lineages, tmp_path_factory):
    out = tmp_path_factory.mktemp("dashboard") / "report.html"
    proc = cli("lineage", "dashboard", *toy_lineages, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    return out


def test_dashboard_is_one_self_contained_file(report):
    text = report.read_text()
    # nothing to fetch: no external scripts, styles, fonts or images
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//|<link\b", text)
    assert "toy_self (toy, proposer=self)" in text and "toy_random (toy, proposer=random)" in text
    data = json.loads(re.search(r'<script type="application/json" id="lineage-data">(.*?)</script>', text, re.S)
                      .group(1).replace("<\\/", "</"))
    assert [len(lin["attempts"]) for lin in data["lineages"]] == [5, 5]


def test_dashboard_refuses_a_directory_without_lineage(tmp_path):
    proc = cli("lineage", "dashboard", tmp_path, "-o", tmp_path / "x.html")
    assert proc.returncode == 2 and "lineage.jsonl not found" in proc.stderr
    assert not (tmp_path / "x.html").exists()


def test_compare_table_and_json(toy_lineages):
    proc = cli("lineage", "compare", *toy_lineages)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    row = {ln.split()[0]: ln.split() for ln in lines if ln.startswith("toy_")}
    # lineage, proposer, gens, attempts, promoted, rejected, failed ...
    assert row["toy_self"][3:8] == ["self", "3", "5", "3", "1"]
    assert row["toy_random"][3:8] == ["random", "3", "5", "3", "2"]
    per_gen = [ln.split() for ln in lines if re.match(r"^\d+\s+heldout_loss\.mean\s", ln)]
    assert [r[0] for r in per_gen] == ["0", "1", "2"] and all(len(r) == 4 for r in per_gen)
    js = json.loads(cli("lineage", "compare", *toy_lineages, "--json").stdout)
    self_, rand = js["lineages"]
    assert self_["proposer"] == "self" and rand["proposer"] == "random"
    assert self_["per_generation"]["2"]["params"] < rand["per_generation"]["2"]["params"]
    assert "safety.refusal_rate" in js["metrics"]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the dashboard test needs playwright: pip install -e '.[dev]'")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"the dashboard test needs headless Chromium at {CHROMIUM}: apt-get install -y chromium "
                    "(.ci/run does), or set RECURSIVE_CHROMIUM")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def test_dashboard_in_headless_chromium(browser, report, toy_lineages, tmp_path_factory):
    t0 = time.perf_counter()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(15_000)
    console, requests = [], []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report.as_uri())
    page.wait_for_load_state("load")

    # the lineage tree: every attempt of both lineages, by status
    assert page.locator("#lineage-tree figure.tree").count() == 2
    assert page.locator("#lineage-tree .node").count() == 10
    assert page.locator(".node.status-rejected").count() == 3
    assert page.locator(".node.status-failed").count() == 1
    # the gate's reason on hover
    rejected = page.locator('.node[data-key="0:gen_001/attempt_01"]')
    rejected.locator("circle").hover()
    tip = page.locator("#tooltip")
    assert tip.is_visible()
    assert "heldout_loss.mean = 5.912 > 5.109 (vs_parent)" in tip.inner_text()

    # metrics against generation and against parameter count, both lineages overlaid
    for chart in ("heldout_loss.mean@generation", "params@generation", "heldout_loss.mean@params",
                  "proposer.valid_plan_rate@params"):
        assert page.locator(f'[data-chart="{chart}"] g.series').count() == 2, chart
        assert page.locator(f'[data-chart="{chart}"] circle.pt').count() >= 6, chart
    # safety metrics with their bounds (dashed lines)
    refusal = page.locator('#safety [data-chart="safety.refusal_rate@generation"]')
    assert refusal.locator("polyline.bound").count() == 2
    assert refusal.locator("circle.pt-rejected").count() == 3  # rejected attempts show too, hollow

    # plan diff: click the self lineage's generation-2 child: new recipe code, smaller model
    page.locator('.node[data-key="0:gen_002/attempt_02"] circle').click()
    pane = page.locator('.diffpane[data-key="0:gen_002/attempt_02"]')
    assert pane.is_visible()
    assert page.locator(".diffpane.on").count() == 1
    assert pane.locator("table.kv tr.changed").count() >= 3
    assert "linear decay" in pane.locator("pre.diff .add").all_inner_texts()[-1]
    assert page.locator("#diff-select").input_value() == "0:gen_002/attempt_02"

    # hiding a lineage hides its series
    page.locator('.legend input[data-toggle="1"]').uncheck()
    assert not page.locator('[data-chart="heldout_loss.mean@generation"] g.series[data-lineage="1"]').is_visible()
    page.locator('.legend input[data-toggle="1"]').check()

    shot = tmp_path_factory.mktemp("screenshot") / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("RECURSIVE_DASHBOARD_SCREENSHOT"):
        shutil.copy(shot, os.environ["RECURSIVE_DASHBOARD_SCREENSHOT"])
    print(f"screenshot: {shot} ({time.perf_counter() - t0:.1f} s in the browser)")
    page.close()

    assert console == [], console
    assert requests == [report.as_uri()], requests  # opened offline: nothing but the file itself


def test_lineage_show_says_how_each_models_proposals_fared(toy_lineages):
    from recursive.lineage import show_json, show_table
    self_rd, random_rd = toy_lineages
    children = {(g["generation"], g["attempt"]): g["children"] for g in show_json(self_rd)["generations"]}
    # SHAPES["self"]: gen 0's proposals: 1 rejected then 1 promoted; gen 1 attempt 2's: 1 failed, 1 promoted
    assert children[(0, 1)] == {"attempts": 2, "promoted": 1}
    assert children[(1, 2)] == {"attempts": 2, "promoted": 1}
    assert children[(1, 1)] == {"attempts": 0, "promoted": 0} == children[(2, 2)]
    assert show_json(random_rd)["generations"][1]["children"] == {"attempts": 3, "promoted": 1}
    assert "children" in show_table(self_rd).splitlines()[0]
