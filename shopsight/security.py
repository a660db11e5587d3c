"""ASGI middleware in front of the service's endpoints: optional API key and a bounded request body (RequestGuard),
and 503s that say why and when to retry (UnavailableAnswer).

Registered with BentoML's supported hook (`ShopsightService.add_asgi_middleware(RequestGuard, ...)` in
bentos/service.py). Every POST (all prediction endpoints, including ones added later) needs the key when
the environment variable named by `serving.api_key_env` is set; GET routes (/livez, /readyz, /metrics,
the OpenAPI schema) stay open for probes. The key is compared in constant time (hmac.compare_digest).
"""

from __future__ import annotations

import hmac
import os
from typing import Any, Awaitable, Callable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

API_KEY_HEADER = "x-api-key"
GUARDED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def presented_key(headers: Headers) -> str | None:
    """The key a request carries: `X-API-Key: <key>` or `Authorization: Bearer <key>`."""
    if API_KEY_HEADER in headers:
        return headers[API_KEY_HEADER]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def key_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison (no early exit that leaks how much of the key was right)."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


class RequestGuard:
    """401 for a missing or wrong API key (when one is configured), 415 for a body that is not JSON, 413 for a
    body over `max_body_bytes`."""

    def __init__(self, app: Callable, *, max_body_bytes: int, api_key_env: str | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Read once per worker from the environment: the key never lives in the repository or params.yaml.
        self.api_key = os.environ.get(api_key_env) if api_key_env else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in GUARDED_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.api_key and not key_matches(presented_key(headers), self.api_key):
            reason = "missing" if presented_key(headers) is None else "wrong"
            await _error(401, f"{reason} API key: send it as the X-API-Key header (or Authorization: Bearer <key>)",
                         {"WWW-Authenticate": 'Bearer realm="shopsight"'})(scope, receive, send)
            return
        media_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            # Every endpoint takes JSON; BentoML's form parser answers some other bodies with a 500.
            await _error(415, f"Content-Type {media_type[:64]!r} is not supported: send JSON with Content-Type: application/json")(
                scope, receive, send)
            return
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await _error(400, f"Content-Length {declared[:32]!r} is not a byte count")(scope, receive, send)
                return
            if int(declared) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
        # Read the body here (bounded, whatever Content-Length claimed or when chunked) and replay it to the app.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit_kb = self.max_body_bytes // 1024
        await _error(413, f"request body over {limit_kb} KiB (serving.max_body_kb): send fewer users or events per request")(scope, receive, send)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


BUSY = "the server is busy (more requests than it can answer within serving.max_latency_ms): retry after {seconds} s"


class UnavailableAnswer:
    """503s that tell the client why and when to retry, never "An unexpected error has occurred".

    `unavailable(path)` names endpoints that cannot answer now (no model in the store, a model still loading) as
    (reason, retry-after seconds or None): answered here before any parsing. Any other 503 comes from BentoML
    itself, which sheds the requests an adaptive batch cannot serve within max_latency_ms: it becomes "busy" with a
    Retry-After header.
    """

    def __init__(self, app: Callable, *, retry_after_s: int, unavailable: Callable[[str], tuple[str, int | None] | None] | None = None) -> None:
        self.app = app
        self.retry_after_s = max(1, int(retry_after_s))
        self.unavailable = unavailable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in GUARDED_METHODS:
            await self.app(scope, receive, send)
            return
        found = self.unavailable(scope["path"]) if self.unavailable else None
        if found is not None:
            reason, retry_after = found
            await _error(503, reason, {"Retry-After": str(retry_after)} if retry_after else None)(scope, receive, send)
            return
        replaced = False

        async def answer_busy(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 503:
                replaced = True
                busy = _error(503, BUSY.format(seconds=self.retry_after_s), {"Retry-After": str(self.retry_after_s)})
                await send({"type": "http.response.start", "status": 503, "headers": busy.raw_headers})
                await send({"type": "http.response.body", "body": busy.body, "more_body": False})
            elif not replaced:
                await send(message)

        await self.app(scope, receive, answer_busy)
