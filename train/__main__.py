"""`python -m recursive.train ATTEMPT_DIR`: the training stage as a process
(`--screen SCREEN_DIR`: the proposal stage's proxy screening of candidates).

The same command runs under any launcher, which sets rank and world size in the
environment:
    python -m recursive.train ATTEMPT_DIR                                   # one process
    torchrun --standalone --nproc_per_node N -m recursive.train ATTEMPT_DIR # DDP / ZeRO
    accelerate launch --multi_gpu --num_processes N -m recursive.train ATTEMPT_DIR
    srun --ntasks N python -m recursive.train ATTEMPT_DIR                   # SLURM

Exit codes and the files that go with them are recursive/train/protocol.py's: 0 trained;
2 the plan or its recipe failed (TRAIN_ERROR); 75 preempted, checkpoint written
(TRAIN_REQUEUE); anything else is a crash of the stage itself.
"""

import os
import sys
import traceback
from pathlib import Path

from recursive.io import atomic_write_json
from recursive.train import protocol
from recursive.train.distributed import shutdown
from recursive.train.screen import screen
from recursive.train.trainer import Preempted, RecipeError, train


def _is_rank0() -> bool:
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--screen":
        screen(Path(argv[1]))
        return protocol.EXIT_OK
    if len(argv) != 1:
        print("usage: python -m recursive.train ATTEMPT_DIR | --screen SCREEN_DIR", file=sys.stderr)
        return protocol.EXIT_USAGE
    attempt_dir = Path(argv[0])
    try:
        train(attempt_dir)
        shutdown()
    except Preempted as p:
        print(f"training preempted: {p}; exit {protocol.EXIT_REQUEUE} (requeue)", file=sys.stderr, flush=True)
        shutdown()
        return protocol.EXIT_REQUEUE
    except (RecipeError, ValueError) as e:  # the plan's fault, not the stage's
        if _is_rank0():
            atomic_write_json(attempt_dir / protocol.TRAIN_ERROR, {"error": f"{type(e).__name__}: {e}"})
        print(f"training failed: {type(e).__name__}: {e}", file=sys.stderr)
        return protocol.EXIT_PLAN_FAILED
    except Exception as e:  # noqa: BLE001 (recorded for the lineage, then re-raised as exit 1)
        if _is_rank0():
            atomic_write_json(attempt_dir / protocol.TRAIN_ERROR,
                              {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        raise
    return protocol.EXIT_OK


def _exit(code: int) -> None:
    """Leave without the interpreter's teardown: with gloo process groups, destructors at
    exit sometimes abort a rank ("terminate called without an active exception") after all
    work is done and written, and srun/torchrun then fail the whole step. Every output is
    already on disk (atomic renames), so flush and leave."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    try:
        rc = main(sys.argv[1:])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException:  # a crash of the stage itself: print it as Python would, then leave
        traceback.print_exc()
        rc = 1
    _exit(rc)
