"""One import package: `train` and `evaluate` install as recursive.train / recursive.evaluate."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import importlib.util, json
out = {}
for name in ("train", "evaluate", "recursive.train", "recursive.evaluate"):
    spec = importlib.util.find_spec(name)
    out[name] = None if spec is None else spec.origin
print(json.dumps(out))
"""


def test_installed_layout(tmp_path):
    # from another folder, so the checkout itself is not on sys.path: only what is installed
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    found = json.loads(proc.stdout)
    for name in ("train", "evaluate"):
        # Hugging Face's `evaluate` may legitimately be installed; ours must never be it
        # (CI's venv lives inside the clone, so "not under the repo" is not the test: "not
        # our folder" is)
        assert found[name] is None or (REPO / name) not in Path(found[name]).parents, (name, found[name])
    assert found["recursive.train"] and found["recursive.evaluate"]
