"""The training process runs the recipe under a scoped runtime guard: if the static policy
were ever bypassed, recipe code still cannot write or read files, start processes or open
sockets, while the trainer around it (checkpoints, the saved model) works as usual.

The policy is switched off in the child on purpose (check_policy replaced), so that the
runtime layer is what is tested."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from train_helpers import stage_env, tiny_plan, write_attempt

BYPASS = ("import sys, recursive.recipe as r; r.check_policy = lambda source: []; "
          "from recursive.train.__main__ import main; sys.exit(main([sys.argv[1]]))")


def run_bypassed(d):
    return subprocess.run([sys.executable, "-c", BYPASS, str(d)], capture_output=True, text=True,
                          timeout=300, env=stage_env(d.parent))


def with_loss_prefix(code: str, line: str) -> str:
    head = "def loss(logits, labels, teacher_logits, hp):\n"
    assert head in code
    return code.replace(head, head + f"    {line}\n", 1)


@pytest.mark.parametrize("name, line, what", [
    ("write", "torch.__builtins__['open']('{escape}', 'wb').write(b'x')", "for writing"),
    ("read", "torch.__builtins__['open']('/etc/hostname').read()", "opening /etc/hostname"),
    # torch's own zip writer/reader open files in C++, where no audit event is raised
    ("torch-save", "torch.save(logits.detach(), '{escape}')", "torch.save()"),
    ("torch-load", "torch.load('/etc/hostname')", "torch.load()"),
    ("process", "torch.__builtins__['__import__']('subprocess').run(['true'])" , "subprocess"),
    ("socket", "torch.__builtins__['__import__']('socket').socket()", "socket"),
])
def test_recipe_io_is_refused_inside_the_trainer(prepared, tmp_path, name, line, what):
    escape = tmp_path / "escaped.pt"
    base = prepared[3]
    plan = tiny_plan(base, steps=3)
    plan = plan.model_copy(update={"code": with_loss_prefix(plan.code, line.format(escape=escape))})
    d = write_attempt(tmp_path / "attempt", prepared, plan, checkpoint_every=1)
    p = run_bypassed(d)
    assert p.returncode == 2, p.stderr[-2000:]
    err = json.loads((d / "train_error.json").read_text())["error"]
    assert "sandbox" in err and what in err, err
    assert not escape.exists()


def test_trainer_itself_is_not_hindered_by_the_guard(prepared, tmp_path):
    """Same bypass, a harmless recipe: checkpoints every step and the model are written."""
    plan = tiny_plan(prepared[3], steps=3)
    d = write_attempt(tmp_path / "attempt", prepared, plan, checkpoint_every=1)
    p = run_bypassed(d)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (d / "model" / "config.json").exists() and list((d / "checkpoints").glob("step_*"))
