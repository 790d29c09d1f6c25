"""The recipe module: the training code a proposer may rewrite, and the box it runs in.

Two layers here, a third elsewhere:
1. `check_policy`: a static allowlist over the whole module (imports, names, attributes,
   top-level statements) run before the code executes anywhere;
2. `load_recipe`: executes the module with a reduced set of builtins and an import hook
   that only admits the allowlisted modules;
3. `smoke_test`: runs the recipe in a separate process under CPU-time and memory limits
   before any training is spent on it.
The policy is deliberately narrow: a recipe is arithmetic on tensors, it needs no I/O.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

ALLOWED_IMPORTS = {"math", "torch", "torch.nn.functional"}
REQUIRED = {"lr_lambda": 3, "loss": 4}  # function name -> positional parameters
SAFE_BUILTINS = (
    "abs all any bool dict enumerate float int isinstance len list max min pow range "
    "reversed round slice sorted sum tuple zip True False None ValueError ArithmeticError"
).split()
BANNED_NAMES = {
    "eval", "exec", "compile", "open", "input", "breakpoint", "globals", "locals", "vars",
    "getattr", "setattr", "delattr", "__import__", "importlib", "help", "exit", "quit",
    "memoryview", "type", "object", "super", "dir", "id", "hasattr", "classmethod",
    "staticmethod", "property", "os", "sys", "subprocess", "socket", "builtins",
}
# torch entry points that reach files, processes, native code or other processes
BANNED_ATTRS = {
    "load", "save", "hub", "ops", "classes", "library", "jit", "utils", "distributed",
    "multiprocessing", "backends", "from_file", "set_default_device", "compile", "package",
    "cuda", "mps", "xpu", "storage", "UntypedStorage", "TypedStorage", "export", "fx",
    "autograd", "onnx", "profiler", "testing", "overrides", "manual_seed", "seed",
    "set_default_dtype", "set_num_threads", "set_grad_enabled", "register_forward_hook",
    "register_full_backward_hook", "f_globals", "f_locals", "gi_frame", "cr_frame",
    "tb_frame", "func_globals",
}


@dataclass
class PolicyIssue:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def check_policy(source: str) -> list[PolicyIssue]:
    """Static allowlist over the recipe module; empty list means the code may run."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return [PolicyIssue(e.lineno or 0, f"syntax error: {e.msg}")]
    except (ValueError, MemoryError, RecursionError) as e:  # null bytes, absurd nesting
        return [PolicyIssue(0, f"cannot parse: {type(e).__name__}")]
    issues: list[PolicyIssue] = []
    defined: dict[str, ast.FunctionDef] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            defined[node.name] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            pass
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            pass  # docstring
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and _is_constant(node.value):
            pass
        else:
            issues.append(PolicyIssue(node.lineno, f"top-level {type(node).__name__} not allowed "
                                      "(only imports, function definitions and constants)"))
    for node in ast.walk(tree):
        issues.extend(_check_node(node))
    for name, nargs in REQUIRED.items():
        fn = defined.get(name)
        if fn is None:
            issues.append(PolicyIssue(0, f"missing required function {name}() "
                                      f"taking {nargs} positional arguments"))
        elif len(fn.args.args) != nargs or fn.args.vararg or fn.args.kwarg:
            issues.append(PolicyIssue(fn.lineno, f"{name}() must take exactly {nargs} positional arguments"))
    return sorted(issues, key=lambda i: i.line)


def _is_constant(node: ast.AST | None) -> bool:
    return node is None or all(isinstance(n, (ast.Constant, ast.Tuple, ast.List, ast.UnaryOp,
                                              ast.BinOp, ast.operator, ast.unaryop, ast.Load))
                               for n in ast.walk(node))


def _check_node(node: ast.AST) -> list[PolicyIssue]:
    line = getattr(node, "lineno", 0)
    if isinstance(node, ast.Import):
        return [PolicyIssue(line, f"import of {a.name!r} not allowed (allowed: {sorted(ALLOWED_IMPORTS)})")
                for a in node.names if a.name not in ALLOWED_IMPORTS]
    if isinstance(node, ast.ImportFrom):
        full = {f"{node.module}.{a.name}" for a in node.names}
        if node.level or not (full <= ALLOWED_IMPORTS):
            return [PolicyIssue(line, f"from-import of {sorted(full)} not allowed (allowed: {sorted(ALLOWED_IMPORTS)})")]
        return []
    if isinstance(node, ast.Name) and (node.id in BANNED_NAMES or node.id.startswith("_")):
        return [PolicyIssue(line, f"name {node.id!r} not allowed")]
    if isinstance(node, ast.Attribute) and (node.attr in BANNED_ATTRS or node.attr.startswith("_")):
        return [PolicyIssue(line, f"attribute .{node.attr} not allowed")]
    if isinstance(node, (ast.Global, ast.Nonlocal, ast.ClassDef, ast.AsyncFunctionDef, ast.Await,
                         ast.Yield, ast.YieldFrom, ast.Try, ast.With, ast.AsyncWith, ast.Lambda)):
        return [PolicyIssue(line, f"{type(node).__name__} not allowed in a recipe")]
    if isinstance(node, ast.FunctionDef) and node.decorator_list:
        return [PolicyIssue(line, "decorators not allowed")]
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and "__" in node.value:
        return [PolicyIssue(line, "string constants containing '__' not allowed")]
    if isinstance(node, ast.JoinedStr):
        return [PolicyIssue(line, "f-strings not allowed")]
    return []


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    full = {f"{name}.{f}" for f in fromlist or ()} | {name}
    if level or not (full <= ALLOWED_IMPORTS | {"torch.nn"}):
        raise ImportError(f"recipe may not import {name}")
    return builtins.__import__(name, globals, locals, fromlist, level)


@dataclass
class Recipe:
    lr_lambda: Callable[[int, int, int], float]
    loss: Callable
    source: str


def load_recipe(source: str) -> Recipe:
    """Policy-check, then execute the module with reduced builtins. Raises ValueError."""
    issues = check_policy(source)
    if issues:
        raise ValueError("recipe violates the code policy: " + "; ".join(map(str, issues)))
    safe = {n: getattr(builtins, n) for n in SAFE_BUILTINS}
    safe["__import__"] = _guarded_import
    module = ModuleType("recipe")
    module.__dict__["__builtins__"] = safe
    exec(compile(source, "<recipe>", "exec"), module.__dict__)  # noqa: S102 (policy-checked above)
    return Recipe(lr_lambda=module.lr_lambda, loss=module.loss, source=source)


_SMOKE = r"""
import json, math, resource, sys
cpu, mem = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
import torch
torch.set_num_threads(1)
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
from recursive.recipe import load_recipe
r = load_recipe(sys.stdin.read())
out = {"lr": [], "loss": None}
for step in (0, 1, 5, 50, 99):
    v = float(r.lr_lambda(step, 100, 10))
    if not (math.isfinite(v) and 0.0 <= v <= 10.0):
        raise ValueError(f"lr_lambda({step}, 100, 10) = {v}, expected a finite number in [0, 10]")
    out["lr"].append(v)
g = torch.Generator().manual_seed(0)
logits = torch.randn(2, 8, 32, generator=g, requires_grad=True)
labels = torch.randint(0, 32, (2, 8), generator=g)
hp = {"distill_weight": 0.5, "distill_temperature": 2.0}
for teacher in (None, torch.randn(2, 8, 32, generator=g)):
    l = r.loss(logits, labels, teacher, hp)
    if not (isinstance(l, torch.Tensor) and l.dim() == 0 and torch.isfinite(l)):
        raise ValueError(f"loss() returned {l!r}, expected a finite scalar tensor")
    l.backward()
    if logits.grad is None or not torch.isfinite(logits.grad).all():
        raise ValueError("loss() gives no finite gradient w.r.t. the logits")
    out["loss"] = float(l)
print(json.dumps(out))
"""


def smoke_test(source: str, *, cpu_seconds: int = 20, memory_bytes: int = 4 << 30,
               timeout: float = 60.0) -> list[str]:
    """Run the recipe on random tensors in a child process with resource limits.
    Returns problems (empty list = passed)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", _SMOKE, str(cpu_seconds), str(memory_bytes)],
                              input=source, capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return [f"smoke test timed out after {timeout:.0f} s"]
    if proc.returncode < 0:
        return [f"smoke test killed by signal {-proc.returncode} (CPU-time limit {cpu_seconds} s "
                f"or memory limit {memory_bytes >> 20} MiB)"]
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return [f"smoke test failed: {tail[:300]}"]
    try:
        json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return ["smoke test printed no result"]
    return []


def seed_recipe_source() -> str:
    return (Path(__file__).parent / "recipes" / "seed.py").read_text()

