"""The recipe grammar: the subset of Python a self-proposed recipe is decoded in.

A context-free grammar cannot track Python's indentation, and a young proposer cannot be
trusted with free Python, so a recipe here is a *fixed layout* (`LAYOUT`): the seed
recipe's lines, in order, with literal indentation, where some lines are *slots*. A slot
is one line whose expression is chosen from the rules of `SLOT_EBNF`: warm-up shape,
progress, decay schedule (cosine, linear, polynomial, exponential, inverse square root,
step, and products of two), cross-entropy with label smoothing and z-loss, distillation
weight, temperature, divergence (forward, reverse, symmetric KL, squared log-ratio) and how
the terms combine. Every literal is bounded and every schedule stays in [0, 2] for any
step >= warmup, so every program also runs: the grammar aims at recipes that pass the
policy *and* the smoke test, and the property test (tests/proposers/test_recipe_grammar.py)
checks both on sampled programs. No rule refers to itself, directly or not, and every
repetition is bounded, so the language is finite and decoding under it terminates.

The proposer's `code` is then either a whole module of this layout or one search/replace
edit of a slot line of the parent's recipe (recursive/recipe/edits.py). Edits are offered
only when the parent's recipe, less its docstring and comment lines, is a module of this
grammar (the seed is), and only for slot lines that occur once in it: the edited recipe is
then again a grammar module with the parent's (policy-checked) docstring and comments.

The grammar is an aid to decoding, never a substitute for the policy: `check_candidate`
runs the policy and the smoke test on every candidate, grammar-decoded or not.

`plan_ebnf` composes it with the plan's JSON schema for xgrammar: the schema's `code`
property becomes a sentinel constant, xgrammar turns the schema into EBNF, and the
sentinel's literal is replaced by a reference to the JSON-string-escaped recipe grammar
(newline as \\n, quote as \\"), whose rules are appended with a `recipe_` prefix.
"""

from __future__ import annotations

import ast
import json
import random
import re
from functools import lru_cache
from typing import Any

# One line per entry; "<name>" is a slot line, produced by rule `name` of SLOT_EBNF. The
# fixed lines are the seed recipe's (recursive/recipes/seed.py without its docstring and
# comments), so the seed is a module of the grammar and every module reads like it.
LAYOUT = (
    "import math",
    "",
    "import torch",
    "import torch.nn.functional as F",
    "",
    "",
    "def lr_lambda(step, total_steps, warmup_steps):",
    "    if step < warmup_steps:",
    "<warmup_line>",
    "<progress_line>",
    "<schedule_line>",
    "",
    "",
    "def loss(logits, labels, teacher_logits, hp):",
    "    vocab = logits.shape[-1]",
    "<ce_line>",
    "<weight_line>",
    "    if teacher_logits is None or w <= 0:",
    "        return ce",
    "<temperature_line>",
    "    mask = (labels.reshape(-1) != -100).float()",
    "    student = F.log_softmax(logits.reshape(-1, vocab).float() / t, dim=-1)",
    "    teacher = F.log_softmax(teacher_logits.reshape(-1, vocab).float() / t, dim=-1)",
    "<divergence_line>",
    "    kl = (kl * mask).sum() / torch.clamp(mask.sum(), min=1.0)",
    "<combine_line>",
)

# xgrammar EBNF (the llama.cpp dialect); literals are the Python text. Ranges that keep the
# recipe sane: a warm-up ramp in (0, 1]; progress >= 0 after warm-up (any step, also past
# total_steps); every decay shape in [0, 1] for progress >= 0; floor < 0.5, scale in
# [0.5, 1]; label smoothing < 0.3; z-loss coefficient < 0.01 (PaLM uses 1e-4).
SLOT_EBNF = r'''
warmup_line ::= "        return " warmup
warmup ::= ramp | "(" ramp ") ** " power | "math.sqrt(" ramp ")" | "1.0"
ramp ::= "(step + 1) / (warmup_steps + 1)" | "step / max(1, warmup_steps)"
power ::= "0.5" | [1-3] "." [0-9]
progress_line ::= "    progress = " progress
progress ::= "(step - warmup_steps) / max(1, total_steps - warmup_steps)"
    | "(step - warmup_steps + 1) / max(1, total_steps - warmup_steps)"
    | "step / max(1, total_steps)"
schedule_line ::= "    return " schedule
schedule ::= floor " + " scale " * " decay | decay
floor ::= "0." [0-4] [0-9]?
scale ::= "0." [5-9] [0-9]? | "1.0"
decay ::= shape (" * " shape)?
shape ::= "0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))"
    | "max(0.0, 1.0 - progress)"
    | "(1.0 - min(1.0, progress)) ** " power
    | "math.exp(-" rate " * progress)"
    | "1.0 / math.sqrt(1.0 + " rate " * progress)"
    | "(" fraction " if progress > " fraction " else 1.0)"
rate ::= [1-9] ("." [0-9])?
fraction ::= "0." [0-9] [0-9]?
ce_line ::= "    ce = " cross_entropy (" + " z_loss)?
cross_entropy ::= "F.cross_entropy(logits.reshape(-1, vocab).float(), labels.reshape(-1), ignore_index=-100"
    (", label_smoothing=" smoothing)? ")"
smoothing ::= "0." [0-2] [0-9]?
z_loss ::= z_coef " * (torch.logsumexp(logits.float(), dim=-1) ** 2).mean()"
z_coef ::= "0.00" [0-9]? [1-9]
weight_line ::= "    w = " weight
weight ::= "hp[\"distill_weight\"]" | "min(1.0, " gain " * hp[\"distill_weight\"])" | fraction
gain ::= "0." [1-9] | [1-2] ("." [0-9])?
temperature_line ::= "    t = " temperature
temperature ::= "hp[\"distill_temperature\"]" | "max(1.0, hp[\"distill_temperature\"])" | [1-4] "." [0-9]
divergence_line ::= "    kl = " divergence
divergence ::= forward_kl | reverse_kl | "0.5 * (" forward_kl " + " reverse_kl ")"
    | "((teacher - student) ** 2).mean(-1)"
forward_kl ::= "(teacher.exp() * (teacher - student)).sum(-1)"
reverse_kl ::= "(student.exp() * (student - teacher)).sum(-1)"
combine_line ::= "    return " ce_term " + w * " temp_factor " * kl"
ce_term ::= "(1.0 - w) * ce" | "ce"
temp_factor ::= "(t * t)" | "t" | "1.0"
'''

EDIT_OPEN, EDIT_MID, EDIT_CLOSE = "<<<<<<< SEARCH\n", "\n=======\n", "\n>>>>>>> REPLACE"
PREFIX = "recipe_"  # rule names in a composed grammar (xgrammar's own are root*, basic_*)
SENTINEL = "RECIPE-CODE-SENTINEL-9f2c"


# ---- a small EBNF reader: (kind, ...) tuples the sampler, matcher and writer walk -------

_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:\\.|[^"\\])*")|(?P<cls>\[[^\]\\"]*\])|(?P<def>::=)'
                    r'|(?P<name>[A-Za-z_]\w*)|(?P<rep>\{\d+,\d+\})|(?P<op>[()|?]))')


def parse_ebnf(text: str) -> dict[str, tuple]:
    """Rules of `text` as trees: ("lit", s) ("cls", chars, src) ("ref", name) ("seq", items)
    ("alt", options) ("rep", item, lo, hi). Only bounded repetition ({m,n}, ?) is read."""
    toks, pos, text = [], 0, text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"EBNF: cannot read {text[pos:pos + 30]!r}")
        toks.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    rules: dict[str, tuple] = {}
    i = 0

    def starts_rule(j: int) -> bool:
        return j + 1 < len(toks) and toks[j][0] == "name" and toks[j + 1][0] == "def"

    def alt() -> tuple:
        nonlocal i
        options = [seq()]
        while i < len(toks) and toks[i] == ("op", "|"):
            i += 1
            options.append(seq())
        return options[0] if len(options) == 1 else ("alt", tuple(options))

    def seq() -> tuple:
        nonlocal i
        items = []
        while i < len(toks) and toks[i][1] not in ("|", ")") and not starts_rule(i):
            items.append(item())
        if not items:
            raise ValueError("EBNF: empty sequence")
        return items[0] if len(items) == 1 else ("seq", tuple(items))

    def item() -> tuple:
        nonlocal i
        kind, val = toks[i]
        i += 1
        if kind == "str":
            node = ("lit", json.loads(val))
        elif kind == "cls":
            node = ("cls", _expand_class(val[1:-1]), val)
        elif kind == "name":
            node = ("ref", val)
        elif val == "(":
            node = alt()
            if i >= len(toks) or toks[i] != ("op", ")"):
                raise ValueError("EBNF: missing ')'")
            i += 1
        else:
            raise ValueError(f"EBNF: unexpected {val!r}")
        while i < len(toks) and (toks[i] == ("op", "?") or toks[i][0] == "rep"):
            lo, hi = (0, 1) if toks[i][1] == "?" else map(int, toks[i][1][1:-1].split(","))
            node = ("rep", node, lo, hi)
            i += 1
        return node

    while i < len(toks):
        if not starts_rule(i):
            raise ValueError(f"EBNF: expected `name ::=`, got {toks[i][1]!r}")
        name = toks[i][1]
        i += 2
        rules[name] = alt()
    _check_finite(rules)
    return rules


def _expand_class(body: str) -> str:
    out, j = [], 0
    while j < len(body):
        if j + 2 < len(body) and body[j + 1] == "-":
            out.extend(chr(c) for c in range(ord(body[j]), ord(body[j + 2]) + 1))
            j += 3
        else:
            out.append(body[j])
            j += 1
    return "".join(out)


def _refs(node: tuple) -> set[str]:
    kind = node[0]
    if kind == "ref":
        return {node[1]}
    if kind in ("seq", "alt"):
        return set().union(*map(_refs, node[1]))
    if kind == "rep":
        return _refs(node[1])
    return set()


def _check_finite(rules: dict[str, tuple]) -> None:
    """Every reference defined, no rule reachable from itself (so no left recursion, and a
    finite language: decoding terminates)."""
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name not in rules:
            raise ValueError(f"EBNF: rule {name!r} is not defined (used by {path[-1] if path else 'root'})")
        if state.get(name) == 1:
            raise ValueError(f"EBNF: rule {name!r} is recursive ({' -> '.join(path + (name,))})")
        if state.get(name) == 2:
            return
        state[name] = 1
        for r in sorted(_refs(rules[name])):
            visit(r, path + (name,))
        state[name] = 2

    for name in rules:
        visit(name, ())


# ---- walking the trees ------------------------------------------------------------------

def _sample(rules: dict[str, tuple], node: tuple, rng: random.Random) -> str:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "cls":
        return rng.choice(node[1])
    if kind == "ref":
        return _sample(rules, rules[node[1]], rng)
    if kind == "seq":
        return "".join(_sample(rules, n, rng) for n in node[1])
    if kind == "alt":
        return _sample(rules, rng.choice(node[1]), rng)
    return "".join(_sample(rules, node[1], rng) for _ in range(rng.randint(node[2], node[3])))


def _max_len(rules: dict[str, tuple], node: tuple) -> int:
    kind = node[0]
    if kind == "lit":
        return len(node[1])
    if kind == "cls":
        return 1
    if kind == "ref":
        return _max_len(rules, rules[node[1]])
    if kind == "seq":
        return sum(_max_len(rules, n) for n in node[1])
    if kind == "alt":
        return max(_max_len(rules, n) for n in node[1])
    return node[3] * _max_len(rules, node[1])


def _ends(rules: dict[str, tuple], node: tuple, s: str, i: int, memo: dict) -> frozenset[int]:
    """Every j such that s[i:j] is in the language of `node`."""
    key = (id(node), i)
    if key in memo:
        return memo[key]
    kind = node[0]
    if kind == "lit":
        out = frozenset([i + len(node[1])]) if s.startswith(node[1], i) else frozenset()
    elif kind == "cls":
        out = frozenset([i + 1]) if i < len(s) and s[i] in node[1] else frozenset()
    elif kind == "ref":
        out = _ends(rules, rules[node[1]], s, i, memo)
    elif kind == "seq":
        at = frozenset([i])
        for n in node[1]:
            at = frozenset().union(*(_ends(rules, n, s, p, memo) for p in at))
        out = at
    elif kind == "alt":
        out = frozenset().union(*(_ends(rules, n, s, i, memo) for n in node[1]))
    else:
        at, acc = frozenset([i]), set()
        for count in range(node[3] + 1):
            if count >= node[2]:
                acc |= at
            if count < node[3]:
                at = frozenset().union(*(_ends(rules, node[1], s, p, memo) for p in at))
        out = frozenset(acc)
    memo[key] = out
    return out


def _without(rules: dict[str, tuple], node: tuple, words: frozenset[str]) -> tuple | None:
    """A tree for the language of `node` less `words` (None: nothing left). Used to keep an
    edit from rewriting a line as it was. Exact on these finite trees: a sequence a b less w
    is (a less the prefixes u of every split w = u v) b, plus u (b less v) for each split."""
    words = frozenset(w for w in words if len(w) in _ends(rules, node, w, 0, {}))
    if not words:
        return node
    kind = node[0]
    if kind == "lit":
        return None
    if kind == "cls":
        chars = "".join(c for c in node[1] if c not in words)
        return ("cls", chars, "[" + chars + "]") if chars else None
    if kind == "ref":
        return _without(rules, rules[node[1]], words)
    if kind == "alt":
        rest = [r for r in (_without(rules, n, words) for n in node[1]) if r is not None]
        return None if not rest else rest[0] if len(rest) == 1 else ("alt", tuple(rest))
    if kind == "rep":
        counts = tuple(("seq", (node[1],) * n) if n else ("lit", "") for n in range(node[2], node[3] + 1))
        return _without(rules, ("alt", counts), words)
    if len(node[1]) == 1:
        return _without(rules, node[1][0], words)
    head, tail = node[1][0], ("seq", node[1][1:])
    splits: dict[str, set[str]] = {}
    for w in words:
        for j in _ends(rules, head, w, 0, {}):
            if len(w) - j in _ends(rules, tail, w[j:], 0, {}):
                splits.setdefault(w[:j], set()).add(w[j:])
    parts = []
    rest = _without(rules, head, frozenset(splits))
    if rest is not None:
        parts.append(("seq", (rest, tail)))
    for u, vs in sorted(splits.items()):
        rest = _without(rules, tail, frozenset(vs))
        if rest is not None:
            parts.append(("seq", (("lit", u), rest)))
    return None if not parts else parts[0] if len(parts) == 1 else ("alt", tuple(parts))


def _ebnf_lit(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)  # the same escapes as xgrammar's EBNF literals


def _write(node: tuple, prefix: str, json_string: bool) -> str:
    kind = node[0]
    if kind == "lit":
        return _ebnf_lit(json.dumps(node[1])[1:-1] if json_string else node[1])
    if kind == "cls":
        return node[2]  # digits only: the same inside a JSON string
    if kind == "ref":
        return prefix + node[1]
    if kind == "seq":
        return "(" + " ".join(_write(n, prefix, json_string) for n in node[1]) + ")"
    if kind == "alt":
        return "(" + " | ".join(_write(n, prefix, json_string) for n in node[1]) + ")"
    return f"{_write(node[1], prefix, json_string)}{{{node[2]},{node[3]}}}"


# ---- the recipe grammar -----------------------------------------------------------------

def _layout_node() -> tuple:
    items: list[tuple] = []
    for line in LAYOUT:
        if line.startswith("<"):
            items += [("ref", line[1:-1]), ("lit", "\n")]
        else:
            items.append(("lit", line + "\n"))
    merged: list[tuple] = []  # adjacent literals as one: shorter EBNF, same language
    for n in items:
        if merged and n[0] == "lit" and merged[-1][0] == "lit":
            merged[-1] = ("lit", merged[-1][1] + n[1])
        else:
            merged.append(n)
    return ("seq", tuple(merged))


@lru_cache(maxsize=1)
def recipe_rules() -> dict[str, tuple]:
    """The parsed grammar: SLOT_EBNF plus `module` (LAYOUT)."""
    rules = parse_ebnf(SLOT_EBNF)
    rules["module"] = _layout_node()
    _check_finite(rules)
    return rules


SLOTS = tuple(line[1:-1] for line in LAYOUT if line.startswith("<"))


def recipe_ebnf(*, prefix: str = "", json_string: bool = False, root: str | None = "root") -> str:
    """The recipe grammar as xgrammar EBNF (root = a whole module). json_string=True: the
    text as it appears inside a JSON string (for the plan grammar)."""
    rules = recipe_rules()
    order = ["module"] + [n for n in rules if n != "module"]
    lines = [f"{root} ::= {prefix}module"] if root else []
    lines += [f"{prefix}{n} ::= {_write(rules[n], prefix, json_string)}" for n in order]
    return "\n".join(lines) + "\n"


def sample_module(rng: random.Random) -> str:
    """A uniformly random walk over the grammar: one whole recipe module."""
    rules = recipe_rules()
    return _sample(rules, rules["module"], rng)


def module_max_chars() -> int:
    rules = recipe_rules()
    return _max_len(rules, rules["module"])


def matches(rule: str, text: str) -> bool:
    """`text` is in the language of `rule` (a slot line rule, or "module")."""
    rules = recipe_rules()
    return len(text) in _ends(rules, rules[rule], text, 0, {})


def canonical_recipe(code: str) -> str | None:
    """The recipe without its module docstring, comment lines and leading blank lines (the
    part the grammar describes); None when it does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    lines = code.split("\n")
    start = 0
    first = tree.body[0] if tree.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        start = first.end_lineno or 0
    kept = [ln for ln in lines[start:] if not ln.lstrip().startswith("#")]
    while kept and not kept[0].strip():
        kept.pop(0)
    return "\n".join(kept)


def is_grammar_module(code: str) -> bool:
    """The recipe, less docstring and comments, is a module of the grammar."""
    canon = canonical_recipe(code) if isinstance(code, str) else None
    return canon is not None and matches("module", canon)


def editable_lines(parent_code: str | None) -> list[tuple[str, str]]:
    """(line, slot rule) for each slot line of the parent's recipe an edit may replace: the
    parent is a grammar module (less docstring and comments) and the line occurs exactly
    once in the whole recipe text, so a SEARCH for it is unambiguous. [] otherwise."""
    return [(line, slot) for line, slot, _ in _edits(parent_code)]


def _edits(parent_code: str | None) -> list[tuple[str, str, tuple]]:
    """(line, slot rule, tree of its replacements: the slot's lines less this one)."""
    if not isinstance(parent_code, str) or not is_grammar_module(parent_code):
        return []
    rules = recipe_rules()
    lines = canonical_recipe(parent_code).split("\n")  # type: ignore[union-attr]
    out = []
    for line, slot in zip(lines, LAYOUT):
        if slot.startswith("<") and parent_code.count(line) == 1:
            other = _without(rules, rules[slot[1:-1]], frozenset([line]))
            if other is not None:
                out.append((line, slot[1:-1], other))
    return out


def edit_text(search: str, replace: str) -> str:
    return f"{EDIT_OPEN}{search}{EDIT_MID}{replace}{EDIT_CLOSE}"


def sample_edit(parent_code: str, rng: random.Random) -> str | None:
    """A random edit the grammar admits for this parent (None: it admits none)."""
    options = _edits(parent_code)
    if not options:
        return None
    line, _, other = rng.choice(options)
    return edit_text(line, _sample(recipe_rules(), other, rng))


def edit_max_chars(parent_code: str | None) -> int:
    rules = recipe_rules()
    return max((len(edit_text(line, "")) + _max_len(rules, other) for line, _, other in _edits(parent_code)),
               default=0)


def code_ebnf(parent_code: str | None, max_chars: int, *, prefix: str = PREFIX,
              json_string: bool = True) -> str | None:
    """Rules of the `code` string's content (root `{prefix}code`): a whole module and/or an
    edit of the parent's recipe, each only where its longest text fits in max_chars. None
    when neither fits (the caller keeps a plain bounded string, whose code the loop
    replaces by the parent's)."""
    options = []
    if module_max_chars() <= max_chars:
        options.append(f"{prefix}module")
    edits = _edits(parent_code)
    if edits and edit_max_chars(parent_code) <= max_chars:
        options.append(f"{prefix}edit")
    if not options:
        return None

    def lit(s: str) -> str:
        return _ebnf_lit(json.dumps(s)[1:-1] if json_string else s)

    out = recipe_ebnf(prefix=prefix, json_string=json_string, root=None)
    out += f"{prefix}code ::= {' | '.join(options)}\n"
    if edits:
        branches = " | ".join(f"({lit(line)} {lit(EDIT_MID)} {_write(other, prefix, json_string)})"
                              for line, _, other in edits)
        out += f"{prefix}edit ::= {lit(EDIT_OPEN)} ({branches}) {lit(EDIT_CLOSE)}\n"
    return out


def _with_sentinel(schema: Any) -> Any:
    """`schema` with every plan's `code` property replaced by a constant sentinel string."""
    if isinstance(schema, list):
        return [_with_sentinel(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _with_sentinel(v) for k, v in schema.items()}
    props = out.get("properties")
    if isinstance(props, dict) and "code" in props and "hparams" in props:
        out["properties"] = {**props, "code": {"const": SENTINEL}}
    return out


def plan_ebnf(schema: dict[str, Any], parent_code: str | None, max_chars: int,
              separators: tuple[str, str] = (",", ":")) -> str | None:
    """The plan grammar: `schema` (compact JSON, as SelfProposer decodes it) with the `code`
    string decoded under the recipe grammar. None when no recipe alternative fits in
    max_chars (decode under the schema alone)."""
    import xgrammar as xgr

    code = code_ebnf(parent_code, max_chars)
    if code is None:
        return None
    base = str(xgr.Grammar.from_json_schema(json.dumps(_with_sentinel(schema)), any_whitespace=False,
                                            separators=separators))
    literal = _ebnf_lit(json.dumps(SENTINEL))
    if literal not in base:
        raise RuntimeError("xgrammar's schema EBNF does not spell the code sentinel as expected")
    return base.replace(literal, f'"\\"" {PREFIX}code "\\""') + code


def grammar_doc() -> str:
    """The grammar as documentation for a prompt: what a recipe module looks like, in rules."""
    rules = recipe_rules()
    return ("Recipe modules of this grammar (xgrammar EBNF, root `module`) always pass the code policy; "
            "`code` may instead be search/replace edits of the parent's recipe, blocks of the form "
            + json.dumps(edit_text("<exact lines>", "<replacement>"))
            + ":\nmodule ::= " + _write(rules["module"], "", False) + "\n" + SLOT_EBNF.strip() + "\n")
