"""Layer 1 of the recipe box: the static allowlist `check_policy` runs over a recipe's source
before the code executes anywhere (the loader runs it again in every process).

Everything a recipe may use is listed here: AST node types, imports, builtins, module and
object attributes; anything not listed is refused. The loader reads the import and builtin
lists too, so the static check and the restricted execution agree on one list.
"""

from __future__ import annotations

import ast
import math
import warnings
from dataclasses import dataclass

ALLOWED_IMPORTS = {"math", "torch", "torch.nn.functional"}
REQUIRED = {"lr_lambda": 3, "loss": 4}  # function name -> positional parameters
SAFE_BUILTINS = (
    "abs all any bool dict enumerate float int isinstance len list max min pow range "
    "reversed round slice sorted sum tuple zip True False None ValueError ArithmeticError"
).split()

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
