"""proposer=openai against a real HTTP server on loopback that each test starts: the
request it sends, retries and backoff, timeouts, bad replies, usage, determinism, and the
path through recursive.propose.run_proposal."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from recursive.attempt import Attempt
from recursive.config import ConfigError, compose_config
from recursive.io import atomic_write_json, read_json
from recursive.plan import ModelSpec, count_params
from recursive.propose import judge, run_proposal
from recursive.proposers import make_proposer, proposal_schema
from recursive.proposers.fixed import shrink_to_budget
from recursive.proposers.openai_api import OpenAIProposer
from recursive.proposers.prompt import build_prompt
from recursive.validate import Limits

KEY_ENV = "RECURSIVE_TEST_OPENAI_KEY"  # not OPENAI_API_KEY: a developer's real key stays out of it


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        state: FakeServer = self.server.state  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with state.lock:
            state.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                   "raw": raw, "body": json.loads(raw) if raw else None, "t": time.monotonic()})
            status, payload, headers, delay = state.script.pop(0) if state.script else state.default
        if delay:
            state.release.wait(delay)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (a timeout test)
            pass

    def log_message(self, *args: Any) -> None:
        pass


class FakeServer:
    """A chat-completions server on 127.0.0.1: replies come from `script` (status, body,
    headers, delay), then `default`; every request is recorded."""

    def __init__(self) -> None:
        self.lock, self.release = threading.Lock(), threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, Any, dict[str, str], float]] = []
        self.default: tuple[int, Any, dict[str, str], float] = (200, reply("{}"), {}, 0.0)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def posts(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST"]


def reply(content: str | None, prompt_tokens: int = 100, completion_tokens: int = 40,
          finish_reason: str = "stop", **choice: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "served",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason, **choice}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def ok(content: str, **kw: Any) -> tuple[int, Any, dict[str, str], float]:
    return (200, reply(content, **kw), {}, 0.0)


def fail(status: int, message: str, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str], float]:
    return (status, {"error": {"message": message, "type": "invalid_request_error"}}, headers or {}, 0.0)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # urllib honours http_proxy from the environment; loopback must not go through one
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def ctx(make_ctx):
    return make_ctx()


@pytest.fixture
def valid_plan(ctx) -> dict[str, Any]:
    """The seed plan with the parent's architecture shrunk into the budget: valid under `limits`."""
    plan = json.loads(json.dumps(ctx.seed_plan))
    plan["model"] = shrink_to_budget(ctx.parent["model"], int(0.5 * ctx.parent["params"]), ctx.budget["vocab_size"])
    plan["code"] = ctx.parent_plan["code"]
    plan["rationale"] = "a smaller copy of the parent"
    return plan


@pytest.fixture
def limits(ctx) -> Limits:
    return Limits(sources=tuple(ctx.sources), vocab_size=ctx.budget["vocab_size"], parent_params=ctx.parent["params"],
                  param_ratio=0.5, max_params=50_000_000, max_train_tokens=2_000_000, smoke_test=False)


def proposer(server: FakeServer, **kw: Any) -> OpenAIProposer:
    settings = {"base_url": server.url, "model": "served", "api_key_env": KEY_ENV, "max_retries": 0,
                "backoff_s": 0.01, "timeout_s": 5.0, **kw}
    return make_proposer("openai", **settings)  # type: ignore[return-value]


def test_valid_reply_passes_judge_and_request_carries_schema_seed_model_key(server, ctx, valid_plan, limits,
                                                                             monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    server.default = ok(json.dumps(valid_plan))
    p = proposer(server)
    cands = p.propose(ctx, 3, seed=7)
    assert [c.index for c in cands] == [0, 1, 2]
    assert all(c.plan == valid_plan and c.error is None and c.logprob == 0.0 for c in cands)
    results = judge(cands, ctx.parent_plan["code"], limits)
    assert all(r["valid"] for r in results), [r["problems"] for r in results]
    assert count_params(ModelSpec.model_validate(valid_plan["model"]), 1024) <= 0.5 * ctx.parent["params"]

    posts = server.posts()
    assert len(posts) == 3 and {r["path"] for r in posts} == {"/v1/chat/completions"}
    assert sorted(r["body"]["seed"] for r in posts) == [7, 8, 9]
    schema = proposal_schema(ctx, code_max_chars=64, rationale_max_chars=48)
    for r in posts:
        body = r["body"]
        assert body["model"] == "served" and body["n"] == 1 and body["max_tokens"] == 900
        assert body["response_format"] == {"type": "json_schema",
                                           "json_schema": {"name": "plan", "schema": schema, "strict": True}}
        assert body["messages"][0]["role"] == "system" and "JSON" in body["messages"][0]["content"]
        assert body["messages"][1] == {"role": "user", "content": build_prompt(ctx, 1200)}
        assert r["headers"]["Authorization"] == "Bearer sk-test-123"
    # the key goes in the header and nowhere else
    assert "sk-test-123" not in json.dumps(p.usage) + repr(vars(p)) + json.dumps(results, default=str)


def test_no_authorization_header_without_the_env_var(server, ctx, valid_plan, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    server.default = ok(json.dumps(valid_plan))
    assert proposer(server).propose(ctx, 1, seed=0)[0].plan == valid_plan
    assert "Authorization" not in server.posts()[0]["headers"]


@pytest.mark.parametrize("mode", ["json_object", "none"])
def test_without_json_schema_the_schema_goes_in_the_system_message(server, ctx, valid_plan, mode):
    server.default = ok("```json\n" + json.dumps(valid_plan) + "\n```")  # a fenced reply still parses
    cand = proposer(server, structured_output=mode, extra_body={"top_k": 20}).propose(ctx, 1, seed=0)[0]
    assert cand.plan == valid_plan
    body = server.posts()[0]["body"]
    assert body["top_k"] == 20
    assert body.get("response_format") == ({"type": "json_object"} if mode == "json_object" else None)
    assert '"schema_version":{"const":1}' in body["messages"][0]["content"]


def test_429_then_500_then_success_is_retried_with_backoff(server, ctx, valid_plan, limits):
    server.script = [fail(429, "slow down", {"Retry-After": "1"}), fail(500, "engine restarting")]
    server.default = ok(json.dumps(valid_plan))
    p = proposer(server, max_retries=3, backoff_s=0.05)
    [cand] = p.propose(ctx, 1, seed=0)
    assert cand.error is None and judge([cand], ctx.parent_plan["code"], limits)[0]["valid"]
    assert p.usage["requests"] == 3 and p.usage["retries"] == 2
    t = [r["t"] for r in server.requests]
    assert t[1] - t[0] >= 0.95  # Retry-After: 1 beats backoff_s
    assert 0.1 <= t[2] - t[1] < 0.9  # then backoff_s * 2 ** 1


def test_retries_spent_gives_a_candidate_error(server, ctx):
    server.default = fail(503, "no capacity")
    p = proposer(server, max_retries=2, backoff_s=0.01)
    cands = p.propose(ctx, 2, seed=0)
    assert all(c.plan is None and "HTTP 503" in c.error and "no capacity" in c.error
               and "after 3 tries" in c.error for c in cands)
    assert p.usage["requests"] == 6 and p.usage["retries"] == 4


def test_timeout_is_a_candidate_error_not_an_exception(server, ctx, limits):
    server.default = (200, reply("{}"), {}, 3.0)  # the server sleeps past timeout_s
    p = proposer(server, timeout_s=0.3, max_retries=1, backoff_s=0.01)
    t0 = time.monotonic()
    [cand] = p.propose(ctx, 1, seed=0)
    assert time.monotonic() - t0 < 2.5
    assert cand.plan is None and cand.error.startswith("timeout") and "timeout_s=0.3" in cand.error
    assert p.usage["retries"] == 1
    assert judge([cand], ctx.parent_plan["code"], limits)[0]["problems"] == [f"<output>: {cand.error}"]


def test_unreachable_server_gives_k_candidates_with_errors(ctx):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = make_proposer("openai", base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, backoff_s=0.01)
    cands = p.propose(ctx, 3, seed=0)
    assert len(cands) == 3 and all(c.plan is None and "cannot reach" in c.error for c in cands)


@pytest.mark.parametrize("response, expect", [
    (ok('{"schema_version": 1, "model": '), "invalid JSON in the reply's content"),
    (ok("[1, 2]"), "not an object (got list)"),
    (ok('{"lr": NaN}'), "NaN is not a valid JSON number"),
    (ok('{"schema_version": 1', finish_reason="length"), "truncated: the reply reached max_tokens=900"),
    ((200, {"choices": [{"message": {"content": None, "refusal": "I cannot help with that"}}]}, {}, 0.0),
     "model refused: I cannot help"),
    ((200, b"<html>bad gateway</html>", {}, 0.0), "is not JSON: '<html>bad gateway</html>'"),
    ((200, {"object": "list"}, {}, 0.0), "reply has no choices[0].message.content"),
    (fail(400, "max_tokens is too large: 900 > 512"), "HTTP 400 from http://127.0.0.1"),
])
def test_bad_replies_are_candidate_errors(server, ctx, limits, response, expect):
    server.default = response
    p = proposer(server, max_retries=3)
    [cand] = p.propose(ctx, 1, seed=0)
    assert cand.plan is None and expect in cand.error
    assert p.usage["requests"] == 1  # none of these is retried
    [res] = judge([cand], ctx.parent_plan["code"], limits)
    assert not res["valid"] and res["problems"] == [f"<output>: {cand.error}"]


def test_400_names_status_and_server_message(server, ctx):
    server.default = fail(400, "max_tokens is too large: 900 > 512")
    [cand] = proposer(server).propose(ctx, 1, seed=0)
    assert cand.error == f"HTTP 400 from {server.url}/chat/completions: max_tokens is too large: 900 > 512"


def test_usage_tokens_cost_and_logprobs(server, ctx, valid_plan):
    logprobs = {"content": [{"token": "{", "logprob": -0.5}, {"token": "}", "logprob": -1.25}]}
    server.default = ok(json.dumps(valid_plan), prompt_tokens=1000, completion_tokens=250, logprobs=logprobs)
    p = proposer(server, price_per_1k_prompt=0.5, price_per_1k_completion=1.5, logprobs=True)
    cands = p.propose(ctx, 2, seed=0)
    assert all(c.n_tokens == 250 and c.logprob == -1.75 for c in cands)
    assert server.posts()[0]["body"]["logprobs"] is True
    u = p.usage
    assert (u["requests"], u["retries"], u["prompt_tokens"], u["completion_tokens"]) == (2, 0, 2000, 500)
    assert u["cost_usd"] == pytest.approx(2 * (0.5 + 0.375)) and u["seconds"] >= 0 and u["model"] == "served"


def test_same_seed_same_requests(server, ctx, valid_plan):
    server.default = ok(json.dumps(valid_plan))
    p = proposer(server, concurrency=3)
    p.propose(ctx, 3, seed=11)
    p.propose(ctx, 3, seed=11)
    p.propose(ctx, 3, seed=12)
    raw = [sorted(r["raw"] for r in server.posts()[i:i + 3]) for i in (0, 3, 6)]
    assert raw[0] == raw[1] and raw[0] != raw[2]
    assert sorted(json.loads(b)["seed"] for b in raw[2]) == [12, 13, 14]


def test_null_model_uses_the_one_served_model(server, ctx, valid_plan):
    models = {"object": "list", "data": [{"id": "Qwen/Qwen2.5-0.5B-Instruct", "object": "model"}]}
    server.script = [(200, models, {}, 0.0)]
    server.default = ok(json.dumps(valid_plan))
    p = proposer(server, model=None)
    assert p.propose(ctx, 1, seed=0)[0].plan == valid_plan
    assert server.requests[0]["method"] == "GET" and server.requests[0]["path"] == "/v1/models"
    assert server.posts()[0]["body"]["model"] == "Qwen/Qwen2.5-0.5B-Instruct" == p.usage["model"]
    server.script = [(200, {"data": [{"id": "a"}, {"id": "b"}]}, {}, 0.0)]
    cands = p.propose(ctx, 2, seed=0)
    assert all(c.plan is None and "lists 2 models (a, b); set proposer.model" in c.error for c in cands)


@pytest.mark.parametrize("kw, field", [
    ({"structured_output": "xml"}, "proposer.structured_output"), ({"timeout_s": 0}, "proposer.timeout_s"),
    ({"max_retries": "3"}, "proposer.max_retries"), ({"base_url": "localhost:8000"}, "proposer.base_url"),
    ({"temprature": 0.5}, "proposer.temprature: unknown key"), ({"logprobs": 1}, "proposer.logprobs"),
])
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        make_proposer("openai", **kw)
    with pytest.raises(ConfigError, match=field):
        # strings quoted, so that hydra keeps "3" a string
        compose_config(["proposer=openai", *(f"++proposer.{k}={json.dumps(v)}" for k, v in kw.items())])


def test_run_proposal_records_usage(server, ctx, valid_plan, limits, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.script = [ok("not json", completion_tokens=3)]
    server.default = ok(json.dumps(valid_plan), prompt_tokens=500, completion_tokens=200)
    cfg = compose_config(["proposer=openai", f"proposer.base_url={server.url}", "proposer.model=served",
                          "proposer.candidates=3", "proposer.concurrency=1", "proposer.price_per_1k_prompt=2.0"])
    at = Attempt(tmp_path, 1, 1)
    plan, summary = run_proposal(cfg, ctx, tmp_path / "unused_model", limits, seed=5, attempt=at)
    atomic_write_json(tmp_path / "proposal.json", summary)  # what the loop writes
    stored = read_json(tmp_path / "proposal.json")
    assert plan is not None and plan.model.model_dump() == {"init": "scratch", **valid_plan["model"]}  # init defaults to scratch
    assert stored["proposer"] == "openai" and stored["k"] == 3 and stored["selected"] == 1
    assert stored["usage"]["requests"] == 3 and stored["usage"]["prompt_tokens"] == 100 + 500 + 500
    assert stored["usage"]["completion_tokens"] == 403 and stored["usage"]["cost_usd"] == pytest.approx(2.2)
    cands = stored["candidates"]
    assert [c["valid"] for c in cands] == [False, True, True] and "invalid JSON" in cands[0]["problems"][0]
    assert [c["n_tokens"] for c in cands] == [3, 200, 200]
    assert at.prompt.read_text() == build_prompt(ctx, 1200)
