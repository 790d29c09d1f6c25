"""Optional lm-evaluation-harness tasks (`evaluate.lm_eval.tasks`) on the candidate model.

The harness gives real models standard benchmarks (hellaswag, arc, ...) and lets a lineage
define its own tasks as YAML on local data (`evaluate.lm_eval.include_path`). It is an
extra (`pip install -e '.[lmeval]'`), imported only when tasks are configured. Numbers
land in eval.json under `lm_eval.<task>.<metric>`, where a gate criterion can name them.
"""

from __future__ import annotations

import math
from pathlib import Path

INSTALL = "pip install -e '.[lmeval]'"


class LMEvalError(RuntimeError):
    """The harness is missing, or a configured task cannot be found."""


def run_lm_eval(model_path: Path | str, tasks: list[str], include_path: str | None = None,
                limit: int | None = None, batch_size: int | str = 8, device: str = "cpu") -> dict:
    """Run lm-eval's `tasks` on the saved model at `model_path` (save_pretrained, with its
    tokenizer) and return {task: {metric: value, "samples": n, "stderr": {metric: value}}}
    with finite numbers only. Groups (mmlu, ...) appear beside their subtasks."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise LMEvalError(f"evaluate.lm_eval.tasks={list(tasks)} needs lm-evaluation-harness, which is not "
                          f"installed: {INSTALL}") from e
    include = str(Path(include_path).expanduser().resolve()) if include_path else None
    manager = TaskManager(include_path=include)
    # a task may also be named by the path of its YAML, as lm-eval itself allows
    unknown = [t for t in tasks if t not in manager.all_tasks and not Path(t).is_file()]
    if unknown:
        raise LMEvalError(f"evaluate.lm_eval.tasks: unknown task(s) {unknown} (include_path={include!r}); "
                          "`lm-eval ls tasks` lists the built-in ones")
    # float32: the evaluator's other evals run the model as saved, and fp16 on CPU is slow and lossy
    args = {"pretrained": str(model_path), "tokenizer": str(model_path), "dtype": "float32"}
    results = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=list(tasks), task_manager=manager,
                                      limit=limit, batch_size=batch_size, device=device, log_samples=False)
    return _flatten(results)


def _flatten(results: dict) -> dict:
    """lm-eval names metrics `<metric>,<filter>`: keep the metric for the default filter
    `none` and `<metric>_<filter>` for others (gsm8k's strict-match and flexible-extract)."""
    out = {}
    for task, row in results["results"].items():
        metrics, stderr = {}, {}
        for key, value in row.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                continue  # alias strings, "N/A" stderrs, NaN
            name, _, filt = key.partition(",")
            name = name if filt in ("", "none") else f"{name}_{filt}"
            if name == "sample_len":  # items evaluated (after `limit`); older lm-eval: n-samples only
                continue
            if name.endswith("_stderr"):
                stderr[name.removesuffix("_stderr")] = float(value)
            else:
                metrics[name] = float(value)
        n = row.get("sample_len", results.get("n-samples", {}).get(task, {}).get("effective"))
        if n is not None:
            metrics["samples"] = int(n)
        if stderr:
            metrics["stderr"] = stderr
        out[task] = metrics
    return out
