"""budget.wall_clock_s caps one attempt's training: the trainer checkpoints and the attempt
fails with the reason (locally here; the loop records it), and a plan that screening shows
cannot fit is refused before any of its training is spent."""

import json

from recursive.plan import Plan
from recursive.propose import over_wall_clock
from recursive.train import protocol

from train_helpers import run_stage, tiny_plan, write_attempt


def test_training_past_the_wall_clock_checkpoints_and_fails_with_the_reason(tmp_path, prepared):
    plan = tiny_plan(prepared[3], steps=100_000, warmup_steps=0)  # far more than 2 s of training
    d = write_attempt(tmp_path / "attempt", prepared, plan, wall_clock_s=2.0, log_every=10**9)
    proc = run_stage(d, timeout=120)
    assert proc.returncode == protocol.EXIT_PLAN_FAILED, proc.stderr[-2000:]
    error = json.loads((d / protocol.TRAIN_ERROR).read_text())["error"]
    assert error.startswith("OverBudget: over budget: training ran") and "budget.wall_clock_s=2" in error, error
    steps = [int(p.name.split("_")[1]) for p in (d / protocol.CHECKPOINTS).glob("step_*")]
    assert steps and 0 < max(steps) < 100_000  # stopped part-way, with its state kept
    assert not (d / protocol.MODEL).exists()
    out = protocol.read_outcome(d, proc.returncode)
    assert out.kind == "plan_failed" and "over budget" in out.error


def test_a_plan_that_cannot_fit_is_refused_from_its_screening_throughput(prepared):
    plan: Plan = tiny_plan(prepared[3], steps=1000)  # 1000 x 8 x 64 = 512,000 tokens
    # screened: 50 steps (25,600 tokens) in 2 s -> 12,800 tokens/s -> 40 s for the whole plan
    why = over_wall_clock(plan, screen_seconds=2.0, screen_steps=50, wall_clock_s=30)
    assert why is not None and "12,800 tokens/s" in why and "about 40 s" in why and "wall_clock_s=30" in why
    assert over_wall_clock(plan, screen_seconds=2.0, screen_steps=50, wall_clock_s=60) is None
    assert over_wall_clock(plan, screen_seconds=2.0, screen_steps=50, wall_clock_s=None) is None


def test_the_loop_records_an_over_budget_attempt_with_its_reason(tmp_path):
    import subprocess
    import sys
    rd = tmp_path / "rd"
    proc = subprocess.run([sys.executable, "-m", "recursive.cli", "run", "experiment=smoke", "lineage.generations=0",
                           "logger=none", "hparams.steps=200", "budget.wall_clock_s=0.5", f"run_dir={rd}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "stopped" and "over budget" in result["reason"], result
    [event] = [json.loads(ln) for ln in (rd / "lineage.jsonl").read_text().splitlines()
               if json.loads(ln)["event"] == "attempt"]
    assert event["status"] == "failed" and "budget.wall_clock_s=0.5" in event["reason"]
    assert list((rd / "generations" / "gen_000" / "attempt_01" / protocol.CHECKPOINTS).glob("step_*"))
