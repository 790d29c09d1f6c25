"""The recipe module: the training code a proposer may rewrite, and the box it runs in.

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
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import os
import re
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

from recursive.sandbox import recipe_scope

ALLOWED_IMPORTS = {"math", "torch", "torch.nn.functional"}
REQUIRED = {"lr_lambda": 3, "loss": 4}  # function name -> positional parameters
SAFE_BUILTINS = (
    "abs all any bool dict enumerate float int isinstance len list max min pow range "
    "reversed round slice sorted sum tuple zip True False None ValueError ArithmeticError"
).split()
# kept for callers that read it; the policy itself is the allowlists below
BANNED_NAMES = {
    "eval", "exec", "compile", "open", "input", "breakpoint", "globals", "locals", "vars",
    "getattr", "setattr", "delattr", "__import__", "importlib", "help", "exit", "quit",
    "memoryview", "type", "object", "super", "dir", "id", "hasattr", "classmethod",
    "staticmethod", "property", "os", "sys", "subprocess", "socket", "builtins",
}

# Attributes of the allowed modules. Pure tensor maths only: nothing here reads or writes
# files (load, save, from_file), loads native code (ops, library, classes, utils.cpp_extension),
# reaches other processes (distributed, multiprocessing), compiles (compile, jit, fx, export),
# changes global state (manual_seed, set_default_*, set_num_threads, backends) or takes a
# Python callable to run later (vmap, func, autograd.Function, hooks).
TORCH_ATTRS = frozenset("""
Tensor nn finfo iinfo
float32 float16 bfloat16 float64 float int64 int32 long int bool
inf nan pi e
abs clamp clip where maximum minimum max min amax amin sum mean std var logsumexp
softmax log_softmax sigmoid tanh exp log log1p expm1 log2 sqrt rsqrt pow square sin cos erf
sign relu neg reciprocal floor ceil round trunc frac lerp norm dot mul add sub div true_divide
zeros ones zeros_like ones_like full full_like empty_like arange linspace tensor as_tensor
stack cat concat split chunk gather scatter index_select masked_select take_along_dim
isfinite isnan isinf nan_to_num topk sort argsort argmax argmin einsum matmul bmm cumsum cumprod
flatten reshape squeeze unsqueeze transpose permute diag tril triu outer
eq ne lt le gt ge logical_and logical_or logical_not allclose numel is_tensor
rand rand_like randn randn_like randint randint_like bernoulli multinomial
""".split())
TORCH_NN_ATTRS = frozenset({"functional"})
F_ATTRS = frozenset("""
cross_entropy nll_loss kl_div mse_loss l1_loss smooth_l1_loss huber_loss
binary_cross_entropy binary_cross_entropy_with_logits poisson_nll_loss cosine_similarity
softmax log_softmax softmin one_hot normalize pad relu gelu silu sigmoid tanh logsigmoid
softplus dropout
""".split())
MATH_ATTRS = frozenset("""
pi e tau inf nan cos sin tan acos asin atan atan2 cosh sinh tanh acosh asinh atanh exp exp2
expm1 log log2 log10 log1p sqrt pow fabs floor ceil trunc copysign hypot erf erfc lgamma
isfinite isnan isinf isclose radians degrees fmod remainder
""".split())
MODULE_ATTRS = {"torch": TORCH_ATTRS, "torch.nn": TORCH_NN_ATTRS,
                "torch.nn.functional": F_ATTRS, "math": MATH_ATTRS}
SUBMODULES = {("torch", "nn"): "torch.nn", ("torch.nn", "functional"): "torch.nn.functional"}
# Attributes of every other object (tensors, dtypes, finfo, the hp dict, numbers). The
# names are checked whatever the object, so none of them may be dangerous on *any* object:
# no grad_fn/next_functions (the model's parameters), no storage/data_ptr, no
# register_hook/apply_ (callables), no numpy/tofile, no format (attribute walks in strings).
OBJECT_ATTRS = frozenset("""
shape dtype device ndim size dim numel requires_grad is_floating_point
float double half bfloat16 long int bool to type_as
reshape view view_as reshape_as flatten unflatten unsqueeze squeeze transpose permute t T mT
contiguous expand expand_as repeat repeat_interleave narrow select chunk split unbind roll flip
clone detach item tolist
sum mean std var max min amax amin argmax argmin logsumexp softmax log_softmax cumsum prod
exp log log1p expm1 log2 sqrt rsqrt pow square abs neg sign sigmoid tanh relu reciprocal
floor ceil round trunc clamp clamp_min clamp_max clip lerp norm
add sub mul div matmul
eq ne lt le gt ge logical_and logical_or logical_not isfinite isnan isinf nan_to_num
masked_fill where gather scatter scatter_add index_select masked_select topk sort argsort any all
new_zeros new_ones new_full new_tensor
eps tiny resolution
get keys values items append extend index count
real imag is_integer conjugate
""".split())
# Every AST node type a recipe may contain; anything else (class, lambda, try, with,
# global, yield, await, f-strings, walrus, match, del, import inside a function) is refused.
ALLOWED_NODES = (
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign, ast.AugAssign,
    ast.AnnAssign, ast.If, ast.For, ast.While, ast.Break, ast.Continue, ast.Pass, ast.Expr,
    ast.Raise, ast.Assert, ast.Import, ast.ImportFrom, ast.alias,
    ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Dict, ast.Set, ast.ListComp, ast.SetComp,
    ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.Compare, ast.Call, ast.keyword,
    ast.Constant, ast.Attribute, ast.Subscript, ast.Starred, ast.Name, ast.List, ast.Tuple,
    ast.Slice, ast.Load, ast.Store,
    ast.operator, ast.unaryop, ast.cmpop, ast.boolop,
)
MAX_INT_CONSTANT = 10**12   # no literal big enough to size a memory or CPU bomb on its own


@dataclass
class PolicyIssue:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def check_policy(source: str) -> list[PolicyIssue]:
    """Static allowlist over the recipe module; empty list means the code may run."""
    if not isinstance(source, str):
        return [PolicyIssue(0, f"recipe source must be text, got {type(source).__name__}")]
    try:
        with warnings.catch_warnings():  # e.g. invalid escapes in untrusted text: not our log's business
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except SyntaxError as e:
        return [PolicyIssue(e.lineno or 0, f"syntax error: {e.msg}")]
    except (ValueError, MemoryError, RecursionError, OverflowError) as e:  # null bytes, absurd nesting
        return [PolicyIssue(0, f"cannot parse: {type(e).__name__}")]
    try:
        return _Checker(tree).run()
    except RecursionError:
        return [PolicyIssue(0, "code nested too deeply")]


class _Checker:
    def __init__(self, tree: ast.Module):
        self.tree = tree
        self.issues: list[PolicyIssue] = []
        self.modules: dict[str, str] = {}      # alias -> module path ("F" -> "torch.nn.functional")
        self.imported_funcs: set[str] = set()  # from math import cos
        self.bound: set[str] = set()           # every name the module binds anywhere
        for parent in ast.walk(tree):          # parents tell `torch.x` from a bare `torch`
            for child in ast.iter_child_nodes(parent):
                child._parent = parent  # type: ignore[attr-defined]

    def add(self, node: ast.AST | None, message: str) -> None:
        self.issues.append(PolicyIssue(getattr(node, "lineno", 0) or 0, message))

    def run(self) -> list[PolicyIssue]:
        defined: dict[str, ast.FunctionDef] = {}
        for node in self.tree.body:
            if isinstance(node, ast.FunctionDef):
                defined[node.name] = node
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                self.imports(node)
            elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                pass  # docstring
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and _is_constant(node.value):
                pass
            elif isinstance(node, ast.Assign) and _is_constant(node.value) is None:
                self.add(node, "module-level value computed with **, << or sequence repetition not allowed "
                               "(it runs at load time: a CPU or memory bomb)")
            elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                self.add(node, "module-level call not allowed (code runs only inside lr_lambda and loss)")
            else:
                self.add(node, f"top-level {type(node).__name__} not allowed "
                               "(only imports, function definitions and constants)")
        self.collect_bound()
        for node in ast.walk(self.tree):
            self.check(node)
        for name, nargs in REQUIRED.items():
            fn = defined.get(name)
            if fn is None:
                self.add(None, f"missing required function {name}() taking {nargs} positional arguments")
            elif (len(fn.args.args) != nargs or fn.args.vararg or fn.args.kwarg or fn.args.kwonlyargs
                  or fn.args.posonlyargs):
                self.add(fn, f"{name}() must take exactly {nargs} positional arguments")
        # one message per (line, text)
        seen, out = set(), []
        for i in sorted(self.issues, key=lambda i: i.line):
            if (i.line, i.message) not in seen:
                seen.add((i.line, i.message))
                out.append(i)
        return out

    def imports(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name not in ALLOWED_IMPORTS:
                    self.add(node, f"import of {a.name!r} not allowed (allowed: {sorted(ALLOWED_IMPORTS)})")
                elif a.asname:
                    self.modules[a.asname] = a.name
                else:
                    self.modules[a.name.split(".")[0]] = a.name.split(".")[0]
            return
        if node.level or node.module is None:
            self.add(node, "relative imports not allowed")
            return
        for a in node.names:
            full = f"{node.module}.{a.name}"
            bind = a.asname or a.name
            if full in ALLOWED_IMPORTS:
                self.modules[bind] = full
            elif node.module in MODULE_ATTRS and a.name in MODULE_ATTRS[node.module] \
                    and (node.module, a.name) not in SUBMODULES:
                self.imported_funcs.add(bind)
            else:
                self.add(node, f"from-import of {full!r} not allowed (allowed: {sorted(ALLOWED_IMPORTS)} "
                               "and their allowlisted attributes)")

    def collect_bound(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.FunctionDef):
                self.bound.add(node.name)
            elif isinstance(node, ast.arg):
                self.bound.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                self.bound.add(node.id)
        self.bound |= self.imported_funcs
        for name in self.bound & set(self.modules):
            self.add(None, f"rebinding the imported module name {name!r} not allowed")

    def check(self, node: ast.AST) -> None:
        if not isinstance(node, ALLOWED_NODES):
            self.add(node, f"{type(node).__name__} not allowed in a recipe")
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if node not in self.tree.body:
                self.add(node, "import inside a function not allowed")
        elif isinstance(node, ast.FunctionDef):
            if node.decorator_list:
                self.add(node, "decorators not allowed")
            if node.returns is not None or any(a.annotation is not None for a in ast.walk(node.args)
                                               if isinstance(a, ast.arg)):
                self.add(node, "annotations not allowed in a recipe")
            if node.name.startswith("_"):
                self.add(node, f"name {node.name!r} not allowed (leading underscore)")
        elif isinstance(node, ast.AnnAssign):
            self.add(node, "annotations not allowed in a recipe")
        elif isinstance(node, ast.arg):
            if node.arg.startswith("_"):
                self.add(node, f"name {node.arg!r} not allowed (leading underscore)")
        elif isinstance(node, ast.Name):
            self.name(node)
        elif isinstance(node, ast.Attribute):
            self.attribute(node)
        elif isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, (str, bytes)) and ("__" in (v if isinstance(v, str) else v.decode("latin-1"))):
                self.add(node, "string constants containing '__' not allowed")
            elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT_CONSTANT:
                self.add(node, f"integer constant {v if abs(v) < 10**30 else '(huge)'} exceeds {MAX_INT_CONSTANT:.0e}")
            elif isinstance(v, bytes) or v is Ellipsis:
                self.add(node, f"{type(v).__name__} constants not allowed")
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "pow" and len(node.args) > 2:
                self.add(node, "three-argument pow() not allowed")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Pow, ast.LShift)):
            big = _literal_magnitude(node)
            if big is not None and big > math.log10(MAX_INT_CONSTANT):
                self.add(node, f"constant expression of about 10^{big:.0f} not allowed "
                               f"(limit {MAX_INT_CONSTANT:.0e})")

    def name(self, node: ast.Name) -> None:
        n = node.id
        if n.startswith("_"):
            self.add(node, f"name {n!r} not allowed (leading underscore)")
        elif isinstance(node.ctx, ast.Store):
            if n in SAFE_BUILTINS:
                self.add(node, f"rebinding the builtin {n!r} not allowed")
        elif n in self.modules:
            parent = getattr(node, "_parent", None)
            if not (isinstance(parent, ast.Attribute) and parent.value is node):
                self.add(node, f"module {n!r} as a value not allowed (only {n}.<allowlisted attribute>)")
        elif n not in self.bound and n not in SAFE_BUILTINS:
            self.add(node, f"name {n!r} not allowed (not defined in the recipe and not an allowed builtin)")

    def module_of(self, node: ast.AST) -> str | None:
        """The module an expression names (`torch`, `torch.nn`, `F`), else None."""
        if isinstance(node, ast.Name):
            return self.modules.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.module_of(node.value)
            if base is not None:
                return SUBMODULES.get((base, node.attr))
        return None

    def attribute(self, node: ast.Attribute) -> None:
        if not isinstance(node.ctx, ast.Load):
            self.add(node, f"assigning or deleting attribute .{node.attr} not allowed (no monkeypatching)")
            return
        base = self.module_of(node.value)
        if base is not None:
            allowed = MODULE_ATTRS[base]
            if node.attr not in allowed:
                self.add(node, f"attribute {base}.{node.attr} not allowed (not on the recipe allowlist)")
                return
            if (base, node.attr) in SUBMODULES:
                parent = getattr(node, "_parent", None)
                if not (isinstance(parent, ast.Attribute) and parent.value is node):
                    self.add(node, f"module {base}.{node.attr} as a value not allowed (only as a prefix)")
        elif node.attr not in OBJECT_ATTRS:
            self.add(node, f"attribute .{node.attr} not allowed (not on the recipe allowlist)")


def _literal_magnitude(node: ast.BinOp) -> float | None:
    """log10 of `a ** b` or `a << b` for numeric literals a, b (nested: the inner one first)."""
    def value(n):
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool):
            return ("v", float(abs(n.value)))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return value(n.operand)
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Pow, ast.LShift)):
            m = _literal_magnitude(n)
            return None if m is None else ("log", m)
        return None
    a, b = value(node.left), value(node.right)
    if a is None or b is None:
        return None
    loga = a[1] if a[0] == "log" else math.log10(max(a[1], 1e-300))
    exp = 10 ** min(b[1], 300) if b[0] == "log" else b[1]
    if isinstance(node.op, ast.LShift):
        return loga + exp * math.log10(2)
    return loga * exp if loga > 0 else 0.0


def _is_constant(node: ast.AST | None) -> bool | None:
    """A top-level value: literals and arithmetic on numbers. False: not a literal value;
    None: a literal computed with `**`, `<<` or sequence repetition (evaluated at load time,
    so possibly a CPU or memory bomb)."""
    if node is None:
        return True
    for n in ast.walk(node):
        if not isinstance(n, (ast.Constant, ast.Tuple, ast.List, ast.UnaryOp, ast.BinOp,
                              ast.operator, ast.unaryop, ast.Load)):
            return False
    for n in ast.walk(node):
        if isinstance(n, (ast.Pow, ast.LShift)):
            return None
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult) and any(
                isinstance(x, (ast.List, ast.Tuple)) or (isinstance(x, ast.Constant) and isinstance(x.value, (str, bytes)))
                for x in (n.left, n.right)):
            return None
    return True


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


def load_recipe(source: str, *, call_seconds: float = 60.0) -> Recipe:
    """Policy-check, then execute the module with reduced builtins. Raises ValueError.
    The returned functions raise RecipeRuntimeError (a ValueError) for anything the recipe does
    wrong at run time, including a Python-level loop longer than `call_seconds` per call."""
    issues = check_policy(source)
    if issues:
        raise ValueError("recipe violates the code policy: " + "; ".join(map(str, issues)))
    safe = {n: getattr(builtins, n) for n in SAFE_BUILTINS}
    safe["__import__"] = _guarded_import
    safe["range"] = _bounded_range
    module = ModuleType("recipe")
    module.__dict__["__builtins__"] = safe
    try:
        code = compile(source, "<recipe>", "exec")
        _guarded_call(lambda: exec(code, module.__dict__), "<module>", call_seconds)()  # noqa: S102
    except RecipeRuntimeError as e:
        raise ValueError(f"recipe module failed to load: {e}") from None
    return Recipe(lr_lambda=_guarded_call(module.lr_lambda, "lr_lambda", call_seconds),
                  loss=_guarded_call(module.loss, "loss", call_seconds), source=source)


_SMOKE = r"""
import json, math, resource, sys
cpu, mem, call_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sys.path[:0] = json.loads(sys.argv[4])  # -I drops PYTHONPATH: the parent's import roots, explicitly
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
import torch
torch.set_num_threads(1)
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
from recursive.recipe import load_recipe
from recursive.sandbox import install_guard
source = sys.stdin.read()
install_guard(read_roots=(), write_roots=())
r = load_recipe(source, call_seconds=call_s)
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


def _import_roots() -> list[str]:
    """Where this process imports `recursive` and torch from, for a child started with -I
    (isolated: no PYTHONPATH, no user site, no cwd), so that an install on PYTHONPATH or
    with --target works as a site-packages install does."""
    import recursive
    import torch
    roots = [str(Path(m.__file__).resolve().parents[1]) for m in (recursive, torch)]
    return [r for i, r in enumerate(roots) if r not in roots[:i]]


def smoke_test(source: str, *, cpu_seconds: int = 20, memory_bytes: int = 4 << 30,
               timeout: float = 60.0) -> list[str]:
    """Run the recipe on random tensors in a child process with resource limits, a wall-clock
    timeout and the runtime guard (no file opens outside the Python installation, no writes,
    sockets, subprocesses or ctypes). Returns problems (empty list = passed)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"
    call_seconds = max(1.0, min(float(cpu_seconds), timeout) / 4)
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", _SMOKE, str(cpu_seconds), str(memory_bytes),
                               str(call_seconds), json.dumps(_import_roots())],
                              input=source, capture_output=True, text=True, timeout=timeout,
                              env=env, cwd="/", start_new_session=True)
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


EDIT_SEARCH, EDIT_SEP, EDIT_REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"
_EDIT_BLOCK = re.compile(r"<<<<<<< SEARCH\n(.*?)\n=======\n(.*?)\n?>>>>>>> REPLACE", re.S)


def is_edit(code: str) -> bool:
    """A proposal's `code` is search/replace edits to the parent's recipe when it starts with
    a SEARCH marker (aider's format):
        <<<<<<< SEARCH
        exact lines of the parent's recipe
        =======
        their replacement
        >>>>>>> REPLACE
    (several blocks may follow each other); anything else is a whole module."""
    return code.lstrip().startswith(EDIT_SEARCH)


def apply_edits(parent_code: str, edits: str) -> tuple[str | None, list[str]]:
    """Apply search/replace blocks in order. Each SEARCH text must occur exactly once in the
    recipe as edited so far. Returns (the new module, []) or (None, problems)."""
    blocks = _EDIT_BLOCK.findall(edits)
    if not blocks:
        return None, ["code: starts with <<<<<<< SEARCH but holds no complete SEARCH/=======/REPLACE block"]
    rest = _EDIT_BLOCK.sub("", edits).strip()
    if rest:
        return None, [f"code: text outside the edit blocks: {rest[:60]!r}"]
    code = parent_code
    for i, (search, replace) in enumerate(blocks, 1):
        n = code.count(search) if search else 0
        if n != 1:
            return None, [f"code: edit {i}: the SEARCH text occurs {n} times in the parent's recipe (expected once)"]
        code = code.replace(search, replace, 1)
    return code, []


def seed_recipe_source() -> str:
    return (Path(__file__).parent / "recipes" / "seed.py").read_text()
