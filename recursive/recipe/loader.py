"""Layer 2 of the recipe box: `load_recipe` executes a recipe that passed the policy, with
reduced builtins, an import hook that admits only the allowlisted modules and a `range`
capped at MAX_RANGE, and wraps lr_lambda/loss so that whatever they raise, or a Python-level
loop that overruns `call_seconds`, reaches the trainer as `RecipeRuntimeError`.
"""

from __future__ import annotations

import builtins
import itertools
import sys
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from recursive.sandbox import recipe_scope
from recursive.recipe.policy import ALLOWED_IMPORTS, MODULE_ATTRS, SAFE_BUILTINS


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if (isinstance(name, str) and isinstance(fromlist, list) and not level and name.startswith("torch.")
            and name in sys.modules):
        # torch's C code (e.g. torch.tensor) imports its own, already loaded submodules through
        # the caller's builtins with a list fromlist; recipe bytecode passes None or a tuple
        return sys.modules[name]
    full = {f"{name}.{f}" for f in fromlist or ()} | {name}
    allowed = ALLOWED_IMPORTS | {"torch.nn"} | {f"{m}.{a}" for m, attrs in MODULE_ATTRS.items() for a in attrs}
    if level or not isinstance(name, str) or not (full <= allowed):
        raise ImportError(f"recipe may not import {name}")
    return builtins.__import__(name, globals, locals, fromlist, level)


MAX_RANGE = 10**7  # a recipe's loops are over steps or small tensors, never more


def _bounded_range(*args):
    """range() for recipes: at most MAX_RANGE items, so `sum(range(10**12))`, a loop in C
    that neither the call deadline nor a signal can interrupt, fails at once instead."""
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise ValueError(f"range of {len(r):,} items exceeds the recipe limit {MAX_RANGE:,}")
    return r


class RecipeRuntimeError(ValueError):
    """The recipe raised, or overran its time, while the trainer called it: the plan's fault
    (a ValueError, which the training process records as the attempt's failure)."""


@dataclass
class Recipe:
    lr_lambda: Callable[[int, int, int], float]
    loss: Callable
    source: str
    module: ModuleType | None = None
    """The executed module, its functions without the guard: only for torch.compile(fullgraph=True),
    whose graph runs none of the recipe's Python (recursive/train/step.py says why). Its name is
    unique in the process, since dynamo finds an inlined function's globals by module name."""


def _guarded_call(fn: Callable, name: str, call_seconds: float) -> Callable:
    """`fn` with its exceptions turned into RecipeRuntimeError and its Python-level execution
    stopped after `call_seconds` (a line trace on the recipe's own frames; a single long C call,
    e.g. one huge tensor op, is bounded by the process's limits instead)."""
    code_name = "<recipe>"

    def wrapped(*args):
        deadline = time.monotonic() + call_seconds

        def local(frame, event, arg):
            if event == "line" and time.monotonic() > deadline:
                raise RecipeRuntimeError(f"recipe {name}() ran longer than {call_seconds:g} s")
            return local

        def tracer(frame, event, arg):
            return local if frame.f_code.co_filename == code_name else None

        previous = sys.gettrace()
        sys.settrace(tracer)
        try:
            with recipe_scope():  # a scoped runtime guard (the trainer's) acts from here on
                return fn(*args)
        except RecipeRuntimeError:
            raise
        except Exception as e:  # noqa: BLE001 (anything the recipe raises is the plan's fault)
            raise RecipeRuntimeError(f"recipe {name}() raised {type(e).__name__}: {str(e)[:300]}") from None
        finally:
            sys.settrace(previous)

    wrapped.__name__ = name
    return wrapped


_LOADED = itertools.count()


def load_recipe(source: str, *, call_seconds: float = 60.0) -> Recipe:
    """Policy-check, then execute the module with reduced builtins. Raises ValueError.
    The returned functions raise RecipeRuntimeError (a ValueError) for anything the recipe does
    wrong at run time, including a Python-level loop longer than `call_seconds` per call."""
    # looked up on the package at call time, as when this was one module: a process that
    # replaces recursive.recipe.check_policy (tests/train/test_train_guard.py switches the
    # policy off to test the runtime guard alone) changes what load_recipe checks
    import recursive.recipe as package
    issues = package.check_policy(source)
    if issues:
        raise ValueError("recipe violates the code policy: " + "; ".join(map(str, issues)))
    safe = {n: getattr(builtins, n) for n in SAFE_BUILTINS}
    safe["__import__"] = _guarded_import
    safe["range"] = _bounded_range
    module = ModuleType(f"recipe_{next(_LOADED)}")
    module.__dict__["__builtins__"] = safe
    try:
        code = compile(source, "<recipe>", "exec")
        _guarded_call(lambda: exec(code, module.__dict__), "<module>", call_seconds)()  # noqa: S102
    except RecipeRuntimeError as e:
        raise ValueError(f"recipe module failed to load: {e}") from None
    return Recipe(lr_lambda=_guarded_call(module.lr_lambda, "lr_lambda", call_seconds),
                  loss=_guarded_call(module.loss, "loss", call_seconds), source=source, module=module)
