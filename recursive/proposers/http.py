"""The HTTP transport of proposer=openai: one request, standard library only (http.client).

Every request of the backend (the models GET, the chat POST, check_endpoint) goes through
`request()`, which

- bounds the whole request by timeout_s: connect, headers and body, redirect hops
  included. A watchdog shuts the socket down at the deadline, so a server that drips one
  byte at a time cannot hold a request past it;
- follows a redirect only within base_url's origin (scheme, host and port), at most
  MAX_HOPS times: the Authorization header is never sent to another origin;
- reads at most max_bytes of a reply;
- uses the proxy the environment names (http_proxy, https_proxy, no_proxy), as urllib would.

Failures are `Failure`s: retryable (429, 5xx, timeouts, connection errors) or not.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import math
import socket
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

REDIRECTS = (301, 302, 303, 307, 308)
MAX_HOPS = 5
ERROR_BODY_BYTES = 1 << 16
USER_AGENT = "recursive-proposer (python http.client)"


class Failure(Exception):
    def __init__(self, message: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable, self.retry_after = retryable, retry_after


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port defaulted from the scheme."""
    u = urlsplit(url)
    scheme = u.scheme.lower()
    try:
        port = u.port
    except ValueError:  # a port that is not a number
        return scheme, (u.hostname or "").lower(), -1
    return scheme, (u.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def retry_after(headers: Any) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), if any."""
    value = (headers or {}).get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def server_message(raw: bytes, reason: str) -> str:
    """The error text of an HTTP error body: OpenAI's {"error": {"message"}}, vLLM's
    {"message"}, FastAPI's {"detail"}, else the raw body; one line, at most 300 chars."""
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message") or err.get("detail") or text if isinstance(err, dict) else err
    except (ValueError, RecursionError):
        msg = text
    return " ".join(str(msg or reason).split())[:300]


def request(url: str, body: bytes | None, headers: dict[str, str], timeout_s: float, max_bytes: int) -> bytes:
    """The body of the 2xx reply to GET (body None) or POST `url`; raises Failure. Redirects
    are followed only within `url`'s origin; 303 turns the request into a GET, the other
    codes repeat it (a chat POST stays a POST)."""
    home, deadline, method = origin(url), time.monotonic() + timeout_s, "POST" if body is not None else "GET"
    headers = {"User-Agent": USER_AGENT, **headers}
    for hop in range(MAX_HOPS + 1):
        status, reason, reply_headers, raw = _exchange(method, url, body, headers, deadline, timeout_s, max_bytes)
        location = reply_headers.get("Location") if status in REDIRECTS else None
        if location:
            target = urljoin(url, location.strip())
            if origin(target) != home:
                raise Failure(f"refused redirect to {target[:300]} (another origin than proposer.base_url; "
                              "the API key is never sent there)", False)
            if hop == MAX_HOPS:
                raise Failure(f"too many redirects (more than {MAX_HOPS}) from {url}", False)
            if status == 303 and method == "POST":
                method, body = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            url = target
            continue
        if not 200 <= status < 300:
            retry = status == 429 or status >= 500
            raise Failure(f"HTTP {status} from {url}: {server_message(raw, reason)}", retry,
                          retry_after(reply_headers) if retry else None)
        return raw
    raise AssertionError("unreachable")


def _proxy(scheme: str, host: str) -> tuple[str, int, dict[str, str]] | None:
    """(host, port, Proxy-Authorization header) of the environment's proxy for a URL, if any."""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    u = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    auth = {}
    if u.username is not None:
        creds = f"{unquote(u.username)}:{unquote(u.password or '')}".encode()
        auth["Proxy-Authorization"] = "Basic " + base64.b64encode(creds).decode()
    return u.hostname or "", u.port or 80, auth


def _exchange(method: str, url: str, body: bytes | None, headers: dict[str, str], deadline: float,
              timeout_s: float, max_bytes: int) -> tuple[int, str, Any, bytes]:
    """(status, reason, headers, body) of one HTTP exchange, on a connection of its own."""
    def timeout() -> Failure:
        return Failure(f"timeout: no reply from {url} within timeout_s={timeout_s}", True)

    u = urlsplit(url)
    scheme, remaining = u.scheme.lower(), deadline - time.monotonic()
    if remaining <= 0:
        raise timeout()
    if scheme not in ("http", "https") or not u.hostname:
        raise Failure(f"cannot reach {url}: not an http(s) URL", False)
    try:
        host, port = u.hostname, u.port or (443 if scheme == "https" else 80)
    except ValueError as e:
        raise Failure(f"cannot reach {url}: {e}", False) from None
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    proxy = _proxy(scheme, host)
    if proxy is None:
        conn = cls(host, port, timeout=remaining)
    elif scheme == "https":  # a CONNECT tunnel through the proxy
        conn = cls(proxy[0], proxy[1], timeout=remaining)
        conn.set_tunnel(host, port, headers=proxy[2])
    else:  # the proxy is sent the absolute URL
        conn = cls(proxy[0], proxy[1], timeout=remaining)
        target, headers = url.split("#")[0], {**headers, **proxy[2]}
    fired = threading.Event()

    def watchdog() -> None:  # the deadline: whatever the socket is waiting for ends now
        fired.set()
        sock = conn.sock
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, under any TLS
            except OSError:
                pass

    timer = threading.Timer(remaining, watchdog)
    timer.daemon = True
    timer.start()
    try:
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as e:
            if fired.is_set() or isinstance(e, TimeoutError):
                raise timeout() from None
            raise Failure(f"cannot reach {url}: {e}", True) from None
        if fired.is_set() or time.monotonic() >= deadline:
            raise timeout()
        status, raw = 0, b""
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            status = resp.status
            if status not in REDIRECTS:
                raw = _read(resp, max_bytes + 1 if 200 <= status < 300 else ERROR_BODY_BYTES)
        except (OSError, http.client.HTTPException, ValueError) as e:
            if fired.is_set() or isinstance(e, TimeoutError):
                raise timeout() from None
            if not 200 <= status < 300 and status:  # an error status whose body broke off
                return status, resp.reason, resp.headers, b""
            if isinstance(e, ValueError):  # http.client quotes a bad header value, which may be the key
                raise Failure(f"request to {url} not sent: a header value or the URL is invalid", False) from None
            raise Failure(f"connection to {url} failed: {type(e).__name__}: {e}", True) from None
        if fired.is_set():  # the reply may have been cut at the deadline
            raise timeout()
        return status, resp.reason, resp.headers, raw
    finally:
        timer.cancel()
        conn.close()


def _read(resp: http.client.HTTPResponse, limit: int) -> bytes:
    """At most `limit` bytes of a reply's body, read in chunks."""
    chunks, n = [], 0
    while n < limit:
        chunk = resp.read(min(1 << 16, limit - n))
        if not chunk:
            break
        chunks.append(chunk)
        n += len(chunk)
    return b"".join(chunks)
