import pytest
import torch

from recursive.recipe import check_policy, load_recipe, seed_recipe_source, smoke_test

SEED = seed_recipe_source()


def test_seed_recipe_passes_policy_and_smoke_test():
    assert check_policy(SEED) == []
    assert smoke_test(SEED) == []


def test_seed_recipe_schedule_and_loss():
    r = load_recipe(SEED)
    lrs = [r.lr_lambda(s, 100, 10) for s in range(100)]
    assert lrs[0] < lrs[9] <= 1.0 and lrs[-1] == pytest.approx(0.1, abs=0.01)
    logits = torch.randn(2, 4, 16)
    labels = torch.randint(0, 16, (2, 4))
    ce = r.loss(logits, labels, None, {"distill_weight": 0.0, "distill_temperature": 1.0})
    assert float(ce) == pytest.approx(float(torch.nn.functional.cross_entropy(logits.reshape(-1, 16), labels.reshape(-1))))
    # distilling from a teacher equal to the student adds zero KL
    mixed = r.loss(logits, labels, logits.clone(), {"distill_weight": 0.5, "distill_temperature": 2.0})
    assert float(mixed) == pytest.approx(0.5 * float(ce), rel=1e-5)


HOSTILE = {
    "import os": "import os\n",
    "from-import": "from subprocess import run\n",
    "dunder import": "def f():\n    return __import__('os')\n",
    "getattr": "def f():\n    return getattr(torch, 'lo' + 'ad')\n",
    "eval": "def f():\n    return eval('1')\n",
    "open": "def f():\n    return open('/etc/passwd').read()\n",
    "torch.load": "def f():\n    return torch.load('x.pt')\n",
    "subclass walk": "def f():\n    return ().__class__.__bases__[0].__subclasses__()\n",
    "top-level call": "print('hi')\n",
    "frame walk": "def f(g):\n    return g.gi_frame.f_globals\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_snippets_refused(name):
    assert check_policy(SEED + "\n" + HOSTILE[name]), name
    with pytest.raises(ValueError, match="code policy"):
        load_recipe(SEED + "\n" + HOSTILE[name])


def test_missing_functions_named():
    issues = check_policy("import math\n")
    assert any("lr_lambda" in str(i) for i in issues) and any("loss" in str(i) for i in issues)


def test_smoke_test_catches_runtime_misbehaviour():
    bad_lr = SEED.replace("return 0.1 + 0.9", "return 1e9 + 0.9")
    assert any("lr_lambda" in p for p in smoke_test(bad_lr))
    spin = SEED.replace("    vocab = logits.shape[-1]", "    while True:\n        pass")
    assert smoke_test(spin, cpu_seconds=2, timeout=30)
