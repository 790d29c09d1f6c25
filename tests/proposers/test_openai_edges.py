"""proposer=openai against hostile or sloppy servers on loopback: redirects (the API key
never leaves base_url's origin), servers that drip bytes (timeout_s bounds the whole
request), replies with prose around the JSON, an HTTP proxy from the environment, and
check_endpoint()."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest

from recursive.proposers import make_proposer
from recursive.proposers.openai_api import OpenAIProposer

KEY_ENV = "RECURSIVE_TEST_OPENAI_KEY"
KEY = "sk-edge-test-456"
PLAN = {"schema_version": 1, "model": {"num_layers": 2}, "rationale": "a {braced} word"}
MODELS = {"object": "list", "data": [{"id": "served", "object": "model"}]}


def chat(content: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        srv: Server = self.server.state  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with srv.lock:
            srv.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                 "raw": raw})
        try:
            srv.route(self)
        except OSError:  # the client gave up (a timeout test)
            pass

    def send_json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def redirect(self, location: str, status: int = 302) -> None:
        self.send_json({}, status, {"Location": location})

    def log_message(self, *args: Any) -> None:
        pass


class Server:
    """A server on 127.0.0.1 answering every request with `route(handler)`; requests are recorded."""

    def __init__(self, route: Callable[[_Handler], None] | None = None) -> None:
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.route = route or (lambda h: h.send_json(MODELS if h.command == "GET" else chat(json.dumps(PLAN))))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.url = self.origin + "/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture
def servers():
    made: list[Server] = []

    def make(route: Callable[[_Handler], None] | None = None) -> Server:
        made.append(Server(route))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def ctx(make_ctx):
    return make_ctx()


def proposer(url: str, **kw: Any) -> OpenAIProposer:
    settings = {"base_url": url, "model": "served", "api_key_env": KEY_ENV, "max_retries": 3,
                "backoff_s": 0.01, "timeout_s": 5.0, **kw}
    return make_proposer("openai", **settings)  # type: ignore[return-value]


# --- 1. redirects -----------------------------------------------------------------------

@pytest.mark.parametrize("model", [None, "served"])  # None: the models GET is redirected first
@pytest.mark.parametrize("host", ["127.0.0.1:{other}", "localhost:{same}"])
def test_redirect_to_another_origin_is_refused_and_gets_no_key(servers, ctx, model, host):
    other = servers()
    first = servers()
    target = "http://" + host.format(other=other.port, same=first.port) + "/v1/steal"
    first.route = lambda h: h.redirect(target)
    p = proposer(first.url, model=model)
    cands = p.propose(ctx, 2, seed=0)
    assert other.requests == []  # nothing at all reached the other server
    assert all(c.plan is None and f"refused redirect to {target}" in c.error
               and "another origin than proposer.base_url" in c.error and KEY not in c.error for c in cands)
    assert {r["method"] for r in first.requests} == ({"GET"} if model is None else {"POST"})
    assert len(first.requests) == (1 if model is None else 2)  # refused, not retried
    assert p.check_endpoint() is not None and "refused redirect" in p.check_endpoint()
    assert other.requests == []


def test_same_origin_redirects_are_followed_with_the_key_and_body(servers, ctx):
    def route(h: _Handler) -> None:
        if h.path == "/v1/models":
            h.redirect("/v2/models", 302)
        elif h.path == "/v1/chat/completions":
            h.redirect(f"http://127.0.0.1:{h.server.server_address[1]}/v2/chat/completions", 307)
        elif h.path == "/v2/models":
            h.send_json(MODELS)
        else:
            h.send_json(chat(json.dumps(PLAN)))

    s = servers(route)
    p = proposer(s.url, model=None, max_retries=0)
    [cand] = p.propose(ctx, 1, seed=3)
    assert cand.error is None and cand.plan == PLAN
    assert [(r["method"], r["path"]) for r in s.requests] == [
        ("GET", "/v1/models"), ("GET", "/v2/models"), ("POST", "/v1/chat/completions"),
        ("POST", "/v2/chat/completions")]
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in s.requests)
    assert s.requests[2]["raw"] == s.requests[3]["raw"] and json.loads(s.requests[3]["raw"])["seed"] == 3
    assert p.usage["requests"] == 2  # a redirect hop is part of its request


def test_a_redirect_loop_stops(servers, ctx):
    s = servers(lambda h: h.redirect(h.path + "x"))
    [cand] = proposer(s.url, max_retries=2).propose(ctx, 1, seed=0)
    assert cand.plan is None and "too many redirects" in cand.error
    assert len(s.requests) == 6  # the request and 5 hops; not retried


# --- 2. timeout_s bounds the whole request ---------------------------------------------

def _drip(h: _Handler, head: bytes, body: bytes, which: str) -> None:
    srv: Server = h.server.state  # type: ignore[attr-defined]
    h.wfile.write(head if which == "body" else b"")
    for b in (head if which == "headers" else body):
        if srv.stop.wait(0.2):
            return
        h.wfile.write(bytes([b]))
    h.wfile.write(body if which == "headers" else b"")


@pytest.mark.parametrize("which", ["headers", "body"])
def test_a_dripping_server_is_cut_at_timeout_s(servers, ctx, which):
    body = json.dumps(chat(json.dumps(PLAN))).encode()
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"p" * 100
            + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode())
    s = servers(lambda h: _drip(h, head, body, which))
    p = proposer(s.url, timeout_s=1.0, max_retries=0)
    t0 = time.monotonic()
    [cand] = p.propose(ctx, 1, seed=0)
    assert time.monotonic() - t0 < 3
    assert cand.plan is None and cand.error.startswith("timeout") and "timeout_s=1.0" in cand.error


# --- 3. replies wrapped in prose ---------------------------------------------------------

@pytest.mark.parametrize("content", [
    "Sure! Here is the plan:\n```json\n{plan}\n```\nIt keeps the recipe.",
    "```\n{plan}\n```",
    "Here is my proposal: {plan}",
    "{plan}\n\nThis halves the layers, which fits the budget.",
    "Use {{braces}} like {{this}} -- the plan: {plan} (done)",
    "<think>The parent has 4 layers {so} I halve them.</think>\n{plan}",
    "<think>\nlet me think {\n</think>\n\nSure:\n```json\n{plan}\n```",
])
def test_wrapped_replies_yield_the_plan(servers, ctx, content):
    text = content.replace("{plan}", json.dumps(PLAN, indent=1)).replace("{{", "{").replace("}}", "}")
    s = servers(lambda h: h.send_json(chat(text)))
    [cand] = proposer(s.url).propose(ctx, 1, seed=0)
    assert cand.error is None and cand.plan == PLAN and cand.text == text


@pytest.mark.parametrize("content, expect", [
    ("Sure! Here is a plan that halves the layers and keeps the recipe.",
     "no JSON object in the reply's content (received 65 chars: 'Sure! Here is a plan"),
    ("x" * 500, "(received 500 chars: '" + "x" * 117 + "...')"),
    ("The plan: {\"lr\": NaN}", "no JSON object in the reply's content (received 21 chars: 'The plan: "),
])
def test_a_reply_without_a_json_object_says_what_was_received(servers, ctx, content, expect):
    s = servers(lambda h: h.send_json(chat(content)))
    p = proposer(s.url)
    [cand] = p.propose(ctx, 1, seed=0)
    assert cand.plan is None and expect in cand.error and "Expecting value" not in cand.error
    assert p.usage["requests"] == 1


def test_nan_inside_prose_is_named_and_not_replaced_by_an_inner_object(servers, ctx):
    content = 'Plan: {"model": {"num_layers": 2}, "lr": NaN} ok'
    s = servers(lambda h: h.send_json(chat(content)))
    [cand] = proposer(s.url).propose(ctx, 1, seed=0)
    assert cand.plan is None and "NaN is not a valid JSON number" in cand.error


# --- an HTTP proxy from the environment is still used -----------------------------------

def test_http_proxy_from_the_environment(servers, ctx, monkeypatch):
    proxy = servers()  # answers as the upstream would; records the absolute request target
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", proxy.origin)
    [cand] = proposer("http://upstream.invalid:8000/v1").propose(ctx, 1, seed=0)
    assert cand.error is None and cand.plan == PLAN
    [r] = proxy.requests
    assert r["path"] == "http://upstream.invalid:8000/v1/chat/completions"
    assert r["headers"]["Host"] == "upstream.invalid:8000"


# --- 4. check_endpoint -------------------------------------------------------------------

def test_check_endpoint(servers):
    s = servers()
    assert proposer(s.url).check_endpoint() is None
    assert proposer(s.url, model=None).check_endpoint() is None
    assert [(r["method"], r["path"], r["headers"]["Authorization"]) for r in s.requests] == [
        ("GET", "/v1/models", f"Bearer {KEY}")] * 2
    s.route = lambda h: h.send_json({"data": [{"id": "a"}, {"id": "b"}]})
    assert proposer(s.url).check_endpoint() is None
    reason = proposer(s.url, model=None).check_endpoint()
    assert "lists 2 models (a, b); set proposer.model" in reason
    s.route = lambda h: h.send_json({"error": {"message": "bad key"}}, 401)
    assert proposer(s.url).check_endpoint() == f"HTTP 401 from {s.url}/models: bad key"


def test_check_endpoint_on_a_closed_port_names_the_url():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p = proposer(f"http://127.0.0.1:{port}/v1", max_retries=1)
    reason = p.check_endpoint()
    assert reason is not None and "\n" not in reason and KEY not in reason
    assert reason.startswith(f"cannot reach http://127.0.0.1:{port}/v1/models: ") and "refused" in reason
    assert "after 2 tries" in reason


# --- the key in errors --------------------------------------------------------------------

def test_a_key_with_a_newline_is_stripped_or_refused_without_being_quoted(servers, ctx, monkeypatch):
    s = servers()
    monkeypatch.setenv(KEY_ENV, KEY + "\n")  # read from a file with its newline
    assert proposer(s.url).propose(ctx, 1, seed=0)[0].plan == PLAN
    assert s.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    monkeypatch.setenv(KEY_ENV, "sk-one\nsk-two")  # http.client refuses it, quoting the value
    p = proposer(s.url)
    [cand] = p.propose(ctx, 1, seed=0)
    assert cand.plan is None and "header value" in cand.error and "sk-one" not in cand.error + str(p.usage)
    assert "sk-one" not in (p.check_endpoint() or "") and len(s.requests) == 1
