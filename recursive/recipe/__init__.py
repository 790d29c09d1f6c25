"""The recipe package: the training code a proposer may rewrite, and the box it runs in.

Three layers here, a fourth in `recursive.sandbox`:
1. `check_policy`: a static *allowlist* over the whole module, run before the code executes
   anywhere: the AST node types a recipe may use, the imports (math, torch,
   torch.nn.functional), every name (bound in the module or an allowlisted builtin), every
   attribute of those modules (`TORCH_ATTRS`, `F_ATTRS`, `MATH_ATTRS`) and every attribute of
   any other object (`OBJECT_ATTRS`: tensor, dict and number methods). Anything not listed
   is refused, so a new torch entry point that reaches files or native code is refused by
   default. No attribute may be assigned or deleted (no monkeypatching), no name may start
   with an underscore, no string may contain a dunder, no module may be used as a value.
2. `load_recipe`: executes the module with reduced builtins and an import hook that only
   admits the allowlisted modules, and wraps the two functions so that whatever they raise
   reaches the trainer as `RecipeRuntimeError` (a ValueError: the plan's fault, never a
   crash of the stage) and a Python-level loop that overruns `call_seconds` is stopped.
3. `smoke_test`: runs the recipe in a separate, isolated process under CPU-time and memory
   limits, a wall-clock timeout and the runtime guard of `recursive.sandbox`, before any
   training is spent on it.
docs/threat-model.md says what this contains and what it does not.

The layers live in submodules (`policy`, `loader`, `smoke`; `edits` applies a proposal's
search/replace edits); this package re-exports their names, so `from recursive.recipe import X`
is the one way in for callers, and the smoke test's child process imports the loader from here.
"""

from __future__ import annotations

from pathlib import Path

from recursive.recipe.policy import (
    ALLOWED_IMPORTS, ALLOWED_NODES, F_ATTRS, MATH_ATTRS, MAX_INT_CONSTANT, MODULE_ATTRS, OBJECT_ATTRS, REQUIRED,
    SAFE_BUILTINS, SUBMODULES, TORCH_ATTRS, TORCH_NN_ATTRS, PolicyIssue, check_policy,
)
from recursive.recipe.loader import MAX_RANGE, Recipe, RecipeRuntimeError, load_recipe
from recursive.recipe.smoke import _SMOKE, smoke_test  # noqa: F401 (_SMOKE: tests read the child's script)
from recursive.recipe.edits import EDIT_REPLACE, EDIT_SEARCH, EDIT_SEP, apply_edits, is_edit

__all__ = [
    "check_policy", "PolicyIssue", "load_recipe", "Recipe", "RecipeRuntimeError", "smoke_test", "is_edit",
    "apply_edits", "seed_recipe_source",
    "ALLOWED_IMPORTS", "ALLOWED_NODES", "F_ATTRS", "MATH_ATTRS", "MAX_INT_CONSTANT", "MODULE_ATTRS",
    "OBJECT_ATTRS", "REQUIRED", "SAFE_BUILTINS", "SUBMODULES", "TORCH_ATTRS", "TORCH_NN_ATTRS", "MAX_RANGE",
    "EDIT_SEARCH", "EDIT_SEP", "EDIT_REPLACE",
]


def seed_recipe_source() -> str:
    """The seed recipe's source text (package data: recursive/recipes/seed.py)."""
    return (Path(__file__).parent.parent / "recipes" / "seed.py").read_text()
