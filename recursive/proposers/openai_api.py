"""`proposer=openai`: plans from any OpenAI-compatible chat-completions server.

A vLLM server (`vllm serve MODEL`), another served open model, or a hosted API. One
request per candidate, with seed = seed + index, so candidate i depends only on (ctx,
seed, i) wherever the server honours seeds. With structured_output=json_schema the
request carries `proposal_schema(ctx)` as a strict response_format (vLLM then decodes
under it as the self proposer does with xgrammar); json_object asks only for JSON and
none for nothing, and both put the schema in the system message instead. Whatever the
server promises, every plan is validated afterwards (`recursive.propose.judge`).

HTTP is the standard library's (http.client, in `.http`): no client package to pin, and
the server's JSON is parsed by the same json module that parses every other plan. The
API key is read from the environment at each request batch and only ever put in the
Authorization header, which never leaves base_url's origin (a redirect elsewhere is
refused); it is not stored, logged or written anywhere. timeout_s bounds each request as
a whole. The plan is the first JSON object of the reply's content, so a reply with a
<think> block, a ```json fence or prose around the object still parses.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any

from .base import SEPARATORS, Candidate, ProposalContext
from .configs import OpenAIConfig
from .grammar import grammar_doc
from .http import Failure, request
from .prompt import build_prompt
from .schema import proposal_schema

STRUCTURED = ("json_schema", "json_object", "none")
MAX_REPLY_BYTES = 8 << 20  # a plan is a few kB; a reply past this is a broken (or hostile) server
LOOP_KEYS = ("name", "candidates", "screen_steps")  # read by recursive.propose, not by the backend
SYSTEM = ("You write the training plan of a smaller successor language model. Reply with one JSON "
          "object and nothing else; its keys: schema_version, model, data, hparams, code, rationale. "
          "A `code` that is not a valid recipe module is replaced by the parent's recipe. Any module "
          "within the recipe policy is accepted (imports: math, torch, torch.nn.functional; "
          "allowlisted calls only); the grammar below is documentation, not a limit: ")


Settings = OpenAIConfig  # the `proposer` config group of proposer=openai; one definition (configs.py)


_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "float": (int, float), "int": (int,), "bool": (bool,)}


def settings_problems(cfg: dict[str, Any]) -> list[str]:
    """Problems of a `proposer` config dict for this backend, each naming its key
    (`proposer.<key>`); loop keys (name, candidates, screen_steps) are ignored."""
    known = {f.name: f for f in fields(Settings)}
    out = [f"proposer.{k}: unknown key for proposer=openai (known: {', '.join(known)})"
           for k in cfg if k not in known and k not in LOOP_KEYS]
    for name, f in known.items():
        if name not in cfg:
            continue
        # annotations are strings: "Optional[str]" -> "str"
        value, typ = cfg[name], str(f.type).removeprefix("Optional[").removesuffix("]")
        if name == "model" and value is None:
            continue
        if name == "extra_body":
            if value is not None and not isinstance(value, dict):
                out.append(f"proposer.extra_body: must be a mapping, got {value!r}")
            continue
        if isinstance(value, bool) != (typ == "bool") or not isinstance(value, _TYPES[typ]):
            out.append(f"proposer.{name}: must be {typ}, got {value!r}")
            continue
        if typ in ("int", "float") and not (math.isfinite(value) and value >= 0):
            out.append(f"proposer.{name}: must be a finite number >= 0, got {value!r}")
    if not out:
        s = {**{f.name: getattr(Settings(), f.name) for f in fields(Settings)}, **cfg}
        if not str(s["base_url"]).startswith(("http://", "https://")):
            out.append(f"proposer.base_url: must start with http:// or https://, got {s['base_url']!r}")
        if s["structured_output"] not in STRUCTURED:
            out.append(f"proposer.structured_output: must be one of {', '.join(STRUCTURED)}, "
                       f"got {s['structured_output']!r}")
        for name in ("timeout_s", "max_tokens", "concurrency", "prompt_chars"):
            if not s[name] > 0:
                out.append(f"proposer.{name}: must be > 0, got {s[name]!r}")
        if s["model"] is not None and not str(s["model"]).strip():
            out.append("proposer.model: must be a model name or null, got an empty string")
    return out


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a valid JSON number")


_THINK = re.compile(r"\s*<think>.*?</think>", re.DOTALL)  # a reasoning model's preamble
_FENCE = re.compile(r"```[ \t]*(?:json)?[ \t]*\n?(.*?)```", re.DOTALL | re.IGNORECASE)


def _balanced_end(text: str, start: int) -> int | None:
    """The index just past the `}` closing the `{` at `start` (JSON strings skipped), if any."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            escaped, in_string = (False, in_string) if escaped else (c == "\\", c != '"')
        elif c == '"':
            in_string = True
        elif c in "{}":
            depth += 1 if c == "{" else -1
            if depth == 0:
                return i + 1
    return None


def _first_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the first balanced `{...}` of text that decodes to an object, None), else (None, the
    first decode error, where one was tried); an object that fails is skipped whole."""
    decoder, pos, first_error = json.JSONDecoder(parse_constant=_reject_constant), 0, None
    while (start := text.find("{", pos)) >= 0:
        try:
            return decoder.raw_decode(text, start)[0], None
        except (ValueError, RecursionError) as e:
            first_error = first_error or f"the object at char {start}: {e or type(e).__name__}"
        end = _balanced_end(text, start)
        if end is None:  # unbalanced: the rest of text is inside it
            break
        pos = end
    return None, first_error


def parse_plan(content: str) -> tuple[dict[str, Any] | None, str | None]:
    """(plan, None) from a reply's content, else (None, error). The content after a leading
    <think> block, or the first ```json fence in it, is parsed whole; failing that, its first
    JSON object is the plan (prose around it is ignored)."""
    text = _THINK.sub("", content, count=1).strip() if content.lstrip().startswith("<think>") else content.strip()
    fence = _FENCE.search(text)
    inner = fence.group(1).strip() if fence else text
    try:
        value = json.loads(inner, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        whole_error = f"invalid JSON in the reply's content: {e or type(e).__name__}"
    else:
        if isinstance(value, dict):
            return value, None
        return None, f"the reply's content is JSON but not an object (got {type(value).__name__})"
    plan, first_error = _first_object(inner)
    if plan is None and fence:
        plan, other = _first_object(text)
        first_error = first_error or other
    if plan is not None:
        return plan, None
    if inner.startswith("{"):  # meant as one JSON object: its own error says most
        return None, whole_error
    shown = content if len(content) <= 120 else content[:117] + "..."
    return None, (f"invalid JSON: no JSON object in the reply's content (received {len(content)} chars: {shown!r})"
                  + (f"; {first_error}" if first_error else ""))


class OpenAIProposer:
    """k chat completions from an OpenAI-compatible server, one request per candidate.
    Keyword arguments are `Settings` fields; a bad one raises ConfigError naming it.
    `usage` is {requests, retries, prompt_tokens, completion_tokens, cost_usd, seconds,
    model} of the last propose()."""

    name = "openai"

    def __init__(self, **settings: Any) -> None:
        from recursive.errors import ConfigError

        problems = settings_problems(settings)
        if problems:
            raise ConfigError("; ".join(problems))
        self.s = Settings(**{k: v for k, v in settings.items() if k not in LOOP_KEYS})
        self.usage: dict[str, Any] = {}
        self._lock = threading.Lock()  # usage counters are shared by the request threads

    def propose(self, ctx: ProposalContext, k: int, seed: int) -> list[Candidate]:
        """k candidates; a failed request is a candidate with plan None and an error."""
        s, t0 = self.s, time.perf_counter()
        self.usage = {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0,
                      "cost_usd": 0.0, "seconds": 0.0, "model": s.model}
        headers = self._headers()
        model, error = s.model, None
        if model is None:
            model, error = self._served_model(headers)
            self.usage["model"] = model
        if error is not None:
            out = [Candidate(index=i, text="", plan=None, logprob=0.0, n_tokens=0, seconds=0.0, error=error)
                   for i in range(k)]
        else:
            bodies = [json.dumps(self.request_body(ctx, model, seed + i), separators=SEPARATORS).encode()
                      for i in range(k)]
            workers = max(1, min(k, s.concurrency))
            if workers == 1:
                out = [self._one(i, b, headers) for i, b in enumerate(bodies)]
            else:
                with ThreadPoolExecutor(workers) as pool:
                    out = list(pool.map(lambda ib: self._one(ib[0], ib[1], headers), enumerate(bodies)))
        u = self.usage
        u["cost_usd"] = round(u["prompt_tokens"] / 1000 * s.price_per_1k_prompt
                              + u["completion_tokens"] / 1000 * s.price_per_1k_completion, 6)
        u["seconds"] = round(time.perf_counter() - t0, 3)
        return out

    def request_body(self, ctx: ProposalContext, model: str, seed: int) -> dict[str, Any]:
        """The JSON body of one chat-completions request (deterministic in its arguments)."""
        s = self.s
        schema = proposal_schema(ctx, code_max_chars=s.code_max_chars, rationale_max_chars=s.rationale_max_chars,
                                 link_context=s.link_context)
        system = SYSTEM + grammar_doc()  # a capable model writes free-form code; the grammar shows a safe shape
        if s.structured_output != "json_schema":  # the server is not told the schema: the model is
            system += " It must match this JSON schema: " + json.dumps(schema, separators=SEPARATORS)
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": build_prompt(ctx, s.prompt_chars)}],
            "temperature": s.temperature, "max_tokens": s.max_tokens, "n": 1, "seed": int(seed),
        }
        if s.structured_output == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "plan", "schema": schema, "strict": True}}
        elif s.structured_output == "json_object":
            body["response_format"] = {"type": "json_object"}
        if s.logprobs:
            body["logprobs"] = True
        body.update(s.extra_body or {})
        return body

    def check_endpoint(self) -> str | None:
        """None when GET {base_url}/models answers with JSON (listing exactly one model where
        proposer.model is null), else a one-line reason: a run can refuse to start on it
        instead of finding out at its first proposal. Retries as every request does."""
        url = self.s.base_url.rstrip("/") + "/models"
        reply, error = self._call(url, None, self._headers(), count=False)
        if error is None and self.s.model is None:
            error = self._one_model(url, reply)[1]
        return error

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.s.api_key_env, "").strip()  # a key file's newline is no part of it
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _served_model(self, headers: dict[str, str]) -> tuple[str | None, str | None]:
        """(model, None) for the one model GET {base_url}/models lists, else (None, error)."""
        url = self.s.base_url.rstrip("/") + "/models"
        reply, error = self._call(url, None, headers)
        if error is not None:
            return None, f"proposer.model is null and listing the served models failed: {error}"
        return self._one_model(url, reply)

    @staticmethod
    def _one_model(url: str, reply: Any) -> tuple[str | None, str | None]:
        data = reply.get("data") if isinstance(reply, dict) else None
        names = [m.get("id") for m in data if isinstance(m, dict)] if isinstance(data, list) else []
        if len(names) != 1 or not isinstance(names[0], str):
            return None, (f"proposer.model is null but {url} lists {len(names)} models "
                          f"({', '.join(map(str, names[:5]))}); set proposer.model")
        return names[0], None

    def _one(self, index: int, body: bytes, headers: dict[str, str]) -> Candidate:
        t0 = time.perf_counter()
        reply, error = self._call(self.s.base_url.rstrip("/") + "/chat/completions", body, headers)
        secs = time.perf_counter() - t0
        if error is not None:
            return Candidate(index=index, text="", plan=None, logprob=0.0, n_tokens=0, seconds=secs, error=error)
        return self._candidate(index, reply, secs)

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self.usage[key] += n

    def _call(self, url: str, body: bytes | None, headers: dict[str, str],
              count: bool = True) -> tuple[Any, str | None]:
        """(parsed JSON reply, None), or (None, error) once retries are spent or the error
        is not worth retrying (a 4xx other than 429, a reply that is not JSON, a redirect
        to another origin). `count`: add to self.usage."""
        s = self.s
        for attempt in range(s.max_retries + 1):
            if count:
                self._count("requests", 1)
            try:
                return self._http(url, body, headers), None
            except Failure as f:
                if not f.retryable or attempt == s.max_retries:
                    return None, str(f) + (f" (after {attempt + 1} tries)" if attempt else "")
                delay = f.retry_after if f.retry_after is not None else s.backoff_s * 2 ** attempt
                if count:
                    self._count("retries", 1)
                time.sleep(min(delay, s.max_backoff_s))
        raise AssertionError("unreachable")

    def _http(self, url: str, body: bytes | None, headers: dict[str, str]) -> Any:
        raw = request(url, body, headers, self.s.timeout_s, MAX_REPLY_BYTES)
        if len(raw) > MAX_REPLY_BYTES:
            raise Failure(f"reply from {url} is larger than {MAX_REPLY_BYTES} bytes", False)
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            snippet = " ".join(raw[:200].decode("utf-8", "replace").split())
            raise Failure(f"reply from {url} is not JSON: {snippet!r}", False) from None

    def _candidate(self, index: int, reply: Any, secs: float) -> Candidate:
        """A Candidate from one chat-completions reply; usage is added to self.usage."""
        usage = reply.get("usage") if isinstance(reply, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        tokens = {k: v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0
                  for k, v in ((k, usage.get(k)) for k in ("prompt_tokens", "completion_tokens"))}
        for k, v in tokens.items():
            self._count(k, v)
        choices = reply.get("choices") if isinstance(reply, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        content = message.get("content")
        logprob = 0.0
        lp = choice.get("logprobs")
        if isinstance(lp, dict) and isinstance(lp.get("content"), list):
            logprob = float(sum(t["logprob"] for t in lp["content"]
                                if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))
                                and math.isfinite(t["logprob"])))
        cand = Candidate(index=index, text=content if isinstance(content, str) else "", plan=None,
                         logprob=logprob, n_tokens=tokens["completion_tokens"], seconds=secs)
        if not isinstance(content, str):
            refusal = message.get("refusal")
            cand.error = f"model refused: {refusal}" if refusal else "reply has no choices[0].message.content"
        elif choice.get("finish_reason") == "length":
            cand.error = f"truncated: the reply reached max_tokens={self.s.max_tokens}"
        else:
            cand.plan, cand.error = parse_plan(content)
        return cand
