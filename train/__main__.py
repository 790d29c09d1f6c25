"""`python -m recursive.train ATTEMPT_DIR`: the training stage as a process
(`--screen SCREEN_DIR`: the proposal stage's proxy screening of candidates).

Exit codes the loop reads: 0 trained; 2 the plan or its recipe failed (recorded as the
attempt's failure, the lineage goes on); anything else is a crash of the stage itself.
"""

import json
import sys
import traceback
from pathlib import Path

from recursive.io import atomic_write_json
from recursive.train.trainer import RecipeError, screen, train


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--screen":
        screen(Path(argv[1]))
        return 0
    if len(argv) != 1:
        print("usage: python -m recursive.train ATTEMPT_DIR | --screen SCREEN_DIR", file=sys.stderr)
        return 64
    attempt_dir = Path(argv[0])
    try:
        train(attempt_dir)
    except (RecipeError, ValueError) as e:  # the plan's fault, not the stage's
        atomic_write_json(attempt_dir / "train_error.json", {"error": f"{type(e).__name__}: {e}"})
        print(f"training failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 (recorded for the lineage, then re-raised as exit 1)
        atomic_write_json(attempt_dir / "train_error.json",
                          {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
