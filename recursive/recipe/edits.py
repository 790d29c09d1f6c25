"""Search/replace edits: a proposal's `code` may be aider-style SEARCH/REPLACE blocks against
the parent's recipe instead of a whole module; `apply_edits` turns them into the module the
policy then checks like any other.
"""

from __future__ import annotations

import re


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
