"""`recursive`: the command line.

  recursive run [hydra overrides...]            run or resume the lineage in run_dir=PATH
  recursive check-plan PLAN.json [--run-dir R] [--generation G]  the loop's validation of a plan
  recursive lineage show RUN_DIR [--json]       the lineage as a table or JSON
  recursive lineage compare RUN_DIR [RUN_DIR ...] [--json]   several lineages side by side
  recursive lineage dashboard RUN_DIR [RUN_DIR ...] -o report.html   one offline HTML dashboard
  recursive lineage sync-wandb RUN_DIR          replay a lineage to a wandb server, with artifact edges
  recursive experiment compare [--proposers self,random,fixed] [--seeds 5] [--out DIR] [hydra overrides...]
                                                one lineage per (proposer, seed) at equal compute, and statistics
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_INVALID, EXIT_USAGE, EXIT_REQUEUE = 1, 2, 75
MAX_PLAN_BYTES = 1 << 20  # check-plan reads at most this much of a plan file


def _err(msg: str) -> None:
    for line in str(msg).splitlines() or [""]:  # one line per problem
        print(f"recursive: error: {line}", file=sys.stderr)


def cmd_run(args) -> int:
    from recursive.config import compose_typed
    from recursive.errors import ConfigError, Requeue, StageError
    cfg: dict = {}
    try:
        typed, cfg = compose_typed(args.overrides)
        from recursive.loop import Orchestrator
        result = Orchestrator(typed, cfg).run()
    except ConfigError as e:
        _err(str(e))
        return EXIT_USAGE
    except Requeue as e:  # preempted: a scheduler (or the user) runs the same command again
        print(f"recursive: requeue: {e}", file=sys.stderr)
        return EXIT_REQUEUE
    except StageError as e:
        _err(str(e))
        return 1
    except OSError as e:  # unwritable or full run directory: nothing recorded is lost
        # a failed write() (EFBIG, ENOSPC) carries no file name: name the run directory then
        _err(f"run directory: {e.filename or cfg.get('run_dir', '')}: {e.strerror or e}")
        return 1
    print(json.dumps(result))
    return 0 if result["status"] == "complete" else 1


def plan_context(plan_path: Path, run_dir: str | None, generation: int | None, overrides: list[str]):
    """What the loop would check this plan against: (Limits, the parent's recipe code or None,
    a description). A plan inside a run directory (generations/gen_G/attempt_A/plan.json)
    is checked against that lineage as a plan of generation G, unless told otherwise; with
    a run directory, the parent is the promoted model of generation - 1 (default: the next
    generation's parent, i.e. the last promoted model); without one, the configs/ budget
    with the seed plan as the parent (generation 1), or no parent at all (generation 0)."""
    from recursive import lineage
    from recursive.attempt import Attempt, parse_attempt_id
    from recursive.config import compose_typed
    from recursive.io import read_json
    from recursive.plan import count_params
    from recursive.run_config import RunConfig, seed_plan
    from recursive.validate import Limits
    if run_dir is None:
        resolved = plan_path.resolve()
        try:
            g, _ = parse_attempt_id(str(resolved.parent))
            root = Attempt.from_dir(resolved.parent).run_dir
        except (ValueError, IndexError):
            g = root = None
        if root is not None and (root / lineage.CONFIG_FILE).exists() and resolved.name == "plan.json":
            run_dir = str(root)
            generation = g if generation is None else generation
    if run_dir:
        rd = Path(run_dir)
        cfg = RunConfig.from_dict(read_json(rd / lineage.CONFIG_FILE))
        manifest = read_json(rd / "data" / "manifest.json")
        vocab = int(manifest["vocab_size"])
        promoted = {e.generation: e for e in lineage.promoted(rd)}
        if generation is None:
            generation = max(promoted, default=-1) + 1
        if generation > 0 and generation - 1 not in promoted:
            raise ValueError(f"{rd} has no promoted generation {generation - 1} to be the parent")
        parent = promoted.get(generation - 1)
        parent_params = None if parent is None else parent.params
        parent_code = None if parent is None else parent.where(rd).recipe.read_text()
        parent_model = None if parent is None else read_json(parent.where(rd).plan)["model"]
        base = read_json(rd / "base_config.json") if (rd / "base_config.json").exists() else None
        where = f"generation {generation} of {rd}"
    else:
        cfg = compose_typed(overrides)[0]
        manifest = None  # no lineage yet: no data to measure contamination on
        from recursive import pretrained
        base = pretrained.base_config(cfg.model) if pretrained.is_pretrained(cfg.model) else None
        vocab = int(cfg.data.vocab_size) if base is None else int(base["vocab_size"])
        generation = 1 if generation is None else generation
        seed = seed_plan(cfg)
        parent_model = None if generation == 0 else seed.model.model_dump(mode="json")
        parent_params = None if generation == 0 else count_params(seed.model, vocab, base)
        parent_code = None if generation == 0 else seed.code
        where = f"generation {generation}, configs/ budget" + ("" if generation == 0 else ", the seed plan as parent")
    limits = Limits.from_config(cfg, vocab, parent_params, manifest, base=base, parent_model=parent_model,
                                generation=generation)
    if parent_params is None and base is not None:
        from recursive.validate import for_checkpoint
        limits = for_checkpoint(limits)
    return limits, parent_code, where


def cmd_check_plan(args) -> int:
    from recursive.errors import ConfigError
    from recursive.validate import check_candidate
    if args.generation is not None and args.generation < 0:
        _err(f"--generation must be >= 0, got {args.generation}")
        return EXIT_USAGE
    try:
        limits, parent_code, where = plan_context(Path(args.plan), args.run_dir, args.generation, args.overrides)
    except (ConfigError, OSError, ValueError, KeyError) as e:
        _err(f"cannot load the lineage's limits: {e}")
        return EXIT_USAGE
    try:
        with open(args.plan, "rb") as f:  # bounded: /dev/zero or a huge file must not be read whole
            data = f.read(MAX_PLAN_BYTES + 1)
    except OSError as e:
        print(f"{args.plan}: cannot read file ({e.strerror or e})")
        return EXIT_INVALID
    if len(data) > MAX_PLAN_BYTES:
        print(f"{args.plan}: <file>: larger than {MAX_PLAN_BYTES:,} bytes (1 MiB); a plan is a few kB")
        return EXIT_INVALID
    checked = check_candidate(data, parent_code, limits)
    # the plan's own code refused: the loop would still train it, on the parent's recipe
    # (code_origin inherited), but that is not the plan the user wrote, so it is reported
    refused = [f"code: {p}" for p in checked.code_problems]
    if refused:
        refused.append("code: the loop would train this plan with the parent's recipe instead (code_origin inherited)")
    if not checked.valid or refused:
        for p in [*map(str, checked.problems), *refused]:
            print(f"{args.plan}: {p}")
        return EXIT_INVALID
    from recursive.plan import count_params
    plan = checked.plan
    code = {"inherited": "the parent's recipe", "edited": "the parent's recipe with the plan's edits",
            "proposed": "the plan's own recipe"}
    print(f"{args.plan}: valid ({count_params(plan.model, limits.vocab_size, limits.base):,} parameters, "
          f"{plan.train_tokens():,} training tokens; trains {code.get(checked.code_origin, 'its recipe')}; "
          f"checked as {where})")
    return 0


def cmd_lineage_show(args) -> int:
    from recursive import lineage
    rd = Path(args.run_dir)
    if not (rd / lineage.LINEAGE_FILE).exists():
        _err(f"{rd} holds no lineage ({lineage.LINEAGE_FILE} not found)")
        return EXIT_USAGE
    print(lineage.dumps(lineage.show_json(rd)) if args.json else lineage.show_table(rd))
    return 0


def _lineage_dirs(paths: list[str]) -> list[Path] | None:
    from recursive import lineage
    dirs = [Path(p) for p in paths]
    missing = [str(d) for d in dirs if not (d / lineage.LINEAGE_FILE).exists()]
    if missing:
        _err(f"no lineage ({lineage.LINEAGE_FILE} not found) in: {', '.join(missing)}")
        return None
    return dirs


def cmd_lineage_compare(args) -> int:
    from recursive import lineage
    dirs = _lineage_dirs(args.run_dirs)
    if dirs is None:
        return EXIT_USAGE
    print(lineage.dumps(lineage.compare_json(dirs)) if args.json else lineage.compare_table(dirs))
    return 0


def cmd_lineage_dashboard(args) -> int:
    from recursive.dashboard import write_dashboard
    dirs = _lineage_dirs(args.run_dirs)
    if dirs is None:
        return EXIT_USAGE
    out = write_dashboard(dirs, Path(args.output), title=args.title)
    print(f"{out} ({out.stat().st_size / 1024:.0f} KiB, {len(dirs)} lineage{'s' if len(dirs) > 1 else ''})")
    return 0


def cmd_lineage_sync_wandb(args) -> int:
    from recursive import wandb_log
    dirs = _lineage_dirs([args.run_dir])
    if dirs is None:
        return EXIT_USAGE
    url = wandb_log.server_url()
    why = wandb_log.reachable(url)
    if why is not None:
        _err(f"cannot reach the wandb server at {url} ({why}); nothing was synced. "
             f"Set WANDB_BASE_URL / WANDB_API_KEY, or keep the offline runs in {dirs[0] / 'wandb'}")
        return EXIT_INVALID
    try:
        done = wandb_log.replay(dirs[0], mode="online", project=args.project, entity=args.entity)
    except Exception as e:  # noqa: BLE001  (no API key, permissions, a server error)
        _err(f"sync to {url} stopped: {type(e).__name__}: {e}; attempts synced so far keep their "
             f"wandb_synced.json, and a rerun goes on from there")
        return EXIT_INVALID
    print(f"synced {len(done)} attempts of {dirs[0]} to {url}")
    return 0


def cmd_experiment_compare(args) -> int:
    from recursive import compare
    from recursive.errors import ConfigError, Requeue
    try:
        proposers = [p.strip() for p in args.proposers.split(",") if p.strip()]
        exp = compare.Experiment(Path(args.out), proposers, compare.parse_seeds(args.seeds), args.overrides)
        report = exp.run()
    except ConfigError as e:
        _err(str(e))
        return EXIT_USAGE
    except Requeue as e:
        print(f"recursive: requeue: {e}", file=sys.stderr)
        return EXIT_REQUEUE
    except OSError as e:
        _err(f"{e.filename or args.out}: {e.strerror or e}")
        return 1
    print(compare.table(report))
    print(f"report: {Path(args.out) / compare.REPORT}")
    failed = [f"{lin['proposer']}/seed_{lin['seed']}" for lin in report["lineages"]
              if lin["status"] not in ("complete", "stopped")]
    if failed:
        _err(f"lineages not finished: {', '.join(failed)} (errors in {compare.REPORT}); run the same command again")
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recursive", description="Recursive self-training lineages.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run or resume a lineage (hydra overrides, e.g. experiment=toy run_dir=runs/x)")
    r.add_argument("overrides", nargs="*")
    r.set_defaults(fn=cmd_run)
    c = sub.add_parser("check-plan", help="validate a plan exactly as the loop does")
    c.add_argument("plan")
    c.add_argument("--run-dir", default=None, help="check against this lineage's budget and parent (default: "
                   "the lineage the plan file sits in, if any)")
    c.add_argument("--generation", type=int, default=None,
                   help="check as a plan for this generation (parent = its promoted predecessor; 0: no parent)")
    c.add_argument("overrides", nargs="*", help="hydra overrides when no --run-dir is given")
    c.set_defaults(fn=cmd_check_plan)
    lin = sub.add_parser("lineage", help="inspect a lineage")
    lsub = lin.add_subparsers(dest="lineage_command", required=True)
    s = lsub.add_parser("show", help="one row per generation attempt")
    s.add_argument("run_dir")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_lineage_show)
    cmp = lsub.add_parser("compare", help="several lineages side by side, as a table")
    cmp.add_argument("run_dirs", nargs="+")
    cmp.add_argument("--json", action="store_true")
    cmp.set_defaults(fn=cmd_lineage_compare)
    dash = lsub.add_parser("dashboard", help="one self-contained HTML file (opens offline) for one or more lineages")
    dash.add_argument("run_dirs", nargs="+")
    dash.add_argument("-o", "--output", default="lineage.html")
    dash.add_argument("--title", default=None)
    dash.set_defaults(fn=cmd_lineage_dashboard)
    sw = lsub.add_parser("sync-wandb", help="replay a lineage to a wandb server with real use_artifact edges")
    sw.add_argument("run_dir")
    sw.add_argument("--project", default=None)
    sw.add_argument("--entity", default=None)
    sw.set_defaults(fn=cmd_lineage_sync_wandb)
    ex = sub.add_parser("experiment", help="experiments over several lineages")
    esub = ex.add_subparsers(dest="experiment_command", required=True)
    ec = esub.add_parser("compare", help="one lineage per (proposer, seed) at equal compute, with statistics over "
                         "seeds (docs/architecture.md, 'The experiment')")
    ec.add_argument("--proposers", default="self,random,fixed",
                    help="comma list; the first is the reference the others are tested against")
    ec.add_argument("--seeds", default="5", help="a count (seeds 0..N-1) or a comma list")
    ec.add_argument("--out", default="runs/compare", help="OUT/<proposer>/seed_<s> run directories, OUT/report.json")
    ec.add_argument("overrides", nargs="*", help="hydra overrides for every lineage; P:key=value for proposer P only")
    ec.set_defaults(fn=cmd_experiment_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in ("run", "experiment"):
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()  # one "Loading weights" bar per model load drowns the log
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
