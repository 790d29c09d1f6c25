"""The parent model proposes its successor's plan: the point of the project.

Decoding is constrained by xgrammar to `proposal_schema(ctx)`, so every finished sample
is JSON in the plan space (shared/notes/FACTS.md, "Constrained decoding"); with
code_grammar the plan's `code` is decoded under the recipe grammar (grammar.py), so it is
a recipe the policy accepts, written or edited by the model. The k samples
share one prompt: the prompt is run once, its KV cache repeated k times, and the k rows
decode together one token per step; a row that finishes is dropped from the batch.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
from collections.abc import Iterator
from typing import Any

import torch

from .base import SEPARATORS, Candidate, ProposalContext, plan_text
from .grammar import plan_ebnf
from .prompt import build_prompt
from .schema import proposal_schema


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Use n intra-op threads inside the block and restore the caller's setting after, so
    a proposer never changes the process-wide thread count (the trainer may share it)."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SelfProposer:
    """Sample k plans from a causal LM checkpoint under the plan's JSON schema.

    The output is compact JSON (separators ",", ":") with keys in the Plan's order, or all
    sorted with sort_keys=True; `base.plan_text` renders stored plans the same way.
    temperature <= 0 means greedy; top_k=0 disables top-k. `unconstrained=True` runs the
    same loop without the grammar mask (for bench/propose_bench.py). `num_threads`, if
    set, applies only while proposing; max_batch bounds the rows decoded together.
    code_grammar=True decodes the plan's `code` under the recipe grammar (grammar.py: a
    whole module or an edit of the parent's recipe, each where it fits code_max_chars);
    False, or neither fitting, leaves `code` a short string the loop replaces by the
    parent's recipe."""

    name = "self"

    def __init__(self, model_path: str, *, temperature: float = 1.0, top_k: int = 0,
                 max_new_tokens: int = 512, prompt_chars: int = 1500, code_max_chars: int = 200,
                 rationale_max_chars: int = 120, unconstrained: bool = False,
                 sort_keys: bool = False, max_batch: int = 16,
                 num_threads: int | None = None, code_grammar: bool = False) -> None:
        import xgrammar as xgr
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.temperature, self.top_k, self.max_new_tokens = temperature, top_k, max_new_tokens
        self.prompt_chars, self.code_max_chars = prompt_chars, code_max_chars
        self.rationale_max_chars, self.unconstrained = rationale_max_chars, unconstrained
        self.sort_keys, self.max_batch, self.num_threads = sort_keys, max(1, max_batch), num_threads
        self.code_grammar = code_grammar
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path).eval()
        # transformers 5.2x renamed past_key_values to cache (the old name warns); 4.x has
        # only the old one
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.vocab_size = int(self.model.config.vocab_size)
        self.eos_id = int(self.tokenizer.eos_token_id)
        # vocab_size from the model: its embedding may be padded past len(tokenizer);
        # xgrammar masks the padding ids out.
        info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size,
                                                  stop_token_ids=[self.eos_id])
        self._compiler = xgr.GrammarCompiler(info)  # caches compiled grammars by schema text
        from recursive.train.families import position_limit
        # learned absolute positions (GPT-2's n_positions) are a hard limit on prompt + plan;
        # rotary families have none (train/families.py)
        self.position_limit = position_limit(self.model.config.to_dict())
        self.fit: dict[str, Any] | None = None  # what the last propose() shrank to fit it

    def _fit(self, ctx: ProposalContext, ids: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(prompt ids, code_max_chars, max_new_tokens) that fit the position limit with a
        complete plan. A plan's tokens are at most its JSON characters plus the EOS (every
        token of this ASCII layout is at least one character; a code character is at most
        two, an escape), so the room left after the prompt bounds the code length. The
        prompt keeps its end (the request) and gives up its beginning only where even a
        plan without code would not fit. What was shrunk is kept in `self.fit`."""
        code, new = self.code_max_chars, self.max_new_tokens
        self.fit = None
        limit = self.position_limit
        if not limit or ids.shape[1] + new <= limit:
            return ids, code, new
        # the plan without code, its rationale at full length, numbers given a quarter more digits
        skeleton = plan_text(dict(ctx.parent_plan, code="", rationale="x" * self.rationale_max_chars))
        skeleton_tokens = len(skeleton) * 5 // 4 + 1
        # the plan's room comes first: a plan without code, or all max_new_tokens if fewer
        kept = ids[:, -max(1, min(ids.shape[1], limit - min(new, skeleton_tokens))):]
        room = limit - kept.shape[1]
        code = max(0, min(code, (room - skeleton_tokens) // 2))
        new = min(new, room)
        self.fit = {"position_limit": limit, "prompt_tokens": int(ids.shape[1]), "prompt_tokens_kept": int(kept.shape[1]),
                    "code_max_chars": code, "code_max_chars_asked": self.code_max_chars,
                    "max_new_tokens": new, "max_new_tokens_asked": self.max_new_tokens}
        return kept, code, new

    def propose(self, ctx: ProposalContext, k: int, seed: int) -> list[Candidate]:
        """k candidate plans for ctx; same ctx and seed -> same candidates."""
        prompt = self.chat(build_prompt(ctx, self.prompt_chars))
        ids, code_max, max_new = self._fit(ctx, self._encode(prompt))
        schema = proposal_schema(ctx, code_max_chars=code_max,
                                 rationale_max_chars=self.rationale_max_chars, sort_keys=self.sort_keys)
        grammar = None
        if self.code_grammar and not self.unconstrained:
            grammar = plan_ebnf(schema, ctx.parent_plan.get("code"), code_max, SEPARATORS)
        return self._sample_ids(ids, schema, k, seed, grammar, max_new)

    def _encode(self, prompt: str) -> torch.Tensor:
        # BOS if the tokenizer adds one; a chat-templated prompt carries its own special tokens
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        return self.tokenizer(prompt, return_tensors="pt", add_special_tokens=not templated).input_ids

    def chat(self, prompt: str) -> str:
        """A checkpoint with a chat template (model=pretrained, an instruct model) is asked
        as a user turn, with its generation prompt; others get the plain prompt."""
        if not getattr(self.tokenizer, "chat_template", None):
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def sample(self, prompt: str, schema: dict[str, Any] | None, k: int, seed: int,
               grammar: str | None = None) -> list[Candidate]:
        """k continuations of `prompt`, constrained to the EBNF `grammar` if given, else to
        `schema` (None or unconstrained=True: free text up to EOS). Batches of at most
        max_batch rows; one torch.Generator seeded by `seed` drives every draw, so the output
        depends only on (prompt, schema or grammar, k, seed). A prompt past the position
        limit keeps its end, and decoding stops at the limit."""
        ids = self._encode(prompt)
        new = self.max_new_tokens
        if self.position_limit:  # the plan's room comes first
            ids = ids[:, -max(64, self.position_limit - new):]
            new = min(new, self.position_limit - ids.shape[1])
        return self._sample_ids(ids, schema, k, seed, grammar, new)

    def _sample_ids(self, ids: torch.Tensor, schema: dict[str, Any] | None, k: int, seed: int,
                    grammar: str | None, max_new: int) -> list[Candidate]:
        compiled = None
        if grammar is not None and not self.unconstrained:
            compiled = self._compiler.compile_grammar(grammar)
        elif schema is not None and not self.unconstrained:
            compiled = self._compiler.compile_json_schema(json.dumps(schema), any_whitespace=False,
                                                          separators=SEPARATORS)
        gen = torch.Generator().manual_seed(int(seed))
        out: list[Candidate] = []
        with _threads(self.num_threads), torch.inference_mode():
            for start in range(0, k, self.max_batch):
                n = min(self.max_batch, k - start)
                out.extend(self._decode(ids, n, start, compiled, gen, max_new))
        return out

    def _decode(self, ids: torch.Tensor, n: int, first_index: int, compiled: Any,
                gen: torch.Generator, max_new: int) -> list[Candidate]:
        import xgrammar as xgr

        t0 = time.perf_counter()
        res = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        past = self._cache(res)
        past.batch_repeat_interleave(n)  # prompt computed once, shared by the n rows
        logits = res.logits[:, -1, :].float().repeat(n, 1)
        matchers = [xgr.GrammarMatcher(compiled) for _ in range(n)] if compiled is not None else None
        mask = xgr.allocate_token_bitmask(n, self.vocab_size) if matchers else None
        tokens: list[list[int]] = [[] for _ in range(n)]
        logprob = [0.0] * n
        finished = [False] * n
        rows = list(range(n))  # candidate index of each row still in the batch
        for step in range(max_new):
            if matchers:
                for r, i in enumerate(rows):
                    matchers[i].fill_next_token_bitmask(mask, r)
                xgr.apply_token_bitmask_inplace(logits, mask[: len(rows)])
            if self.temperature <= 0:
                logp = torch.log_softmax(logits, dim=-1)
                nxt = logp.argmax(dim=-1)
            else:
                scaled = logits / self.temperature
                if self.top_k > 0:
                    kth = torch.topk(scaled, min(self.top_k, scaled.shape[-1]), dim=-1).values[:, -1:]
                    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                logp = torch.log_softmax(scaled, dim=-1)
                nxt = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(1)
            picked = logp.gather(1, nxt[:, None]).squeeze(1).tolist()
            keep = []
            for r, (i, t) in enumerate(zip(rows, nxt.tolist())):
                logprob[i] += picked[r]
                if matchers:
                    if not matchers[i].accept_token(t):  # cannot happen under the mask
                        raise RuntimeError(f"xgrammar refused masked token {t}")
                    done = matchers[i].is_terminated()
                else:
                    done = t == self.eos_id
                if not done or t != self.eos_id:
                    tokens[i].append(t)
                finished[i] = done
                if not done:
                    keep.append(r)
            if not keep or step == max_new - 1:
                break
            if len(keep) < len(rows):
                past.batch_select_indices(torch.tensor(keep))
                nxt = nxt[keep]
                rows = [rows[r] for r in keep]
            res = self.model(input_ids=nxt[:, None], use_cache=True, **{self._cache_kw: past})
            past, logits = self._cache(res), res.logits[:, -1, :].float()
        secs = (time.perf_counter() - t0) / n  # amortised share: the rows decode together
        return [self._candidate(first_index + i, tokens[i], logprob[i], finished[i], secs)
                for i in range(n)]

    @staticmethod
    def _cache(res: Any) -> Any:
        return res["cache"] if "cache" in res else res["past_key_values"]

    def _candidate(self, index: int, toks: list[int], logprob: float, finished: bool,
                   secs: float) -> Candidate:
        text = self.tokenizer.decode(toks, skip_special_tokens=True)
        n_tokens = len(toks) + (1 if finished else 0)  # the EOS counts as a sampled token
        plan, error = None, None
        if not finished:
            error = "truncated"
        else:
            try:
                plan = json.loads(text)
                if not isinstance(plan, dict):
                    plan, error = None, "not a JSON object"
            except json.JSONDecodeError as e:
                error = f"invalid JSON: {e}"
        return Candidate(index=index, text=text, plan=plan, logprob=logprob, n_tokens=n_tokens,
                         seconds=secs, error=error)
