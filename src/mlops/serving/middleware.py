"""Small ASGI middlewares: refuse oversized and form bodies from their headers; answer
GET /metadata; spread keep-alive connections over the workers."""

from __future__ import annotations

import json

FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data")


class RequestHeadersCheck:
    """ASGI middleware: refuse from the headers alone, before the body is read.

    413 when the declared Content-Length exceeds the limit. 415 for a form body on POST
    (what `curl -d` sends without a content-type header): BentoML would read it as form
    fields and answer that `inputs` is missing, which hides that the JSON was never parsed.
    """

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None and int(length) > self.max_body_bytes:
            message = (
                f"request body of {length.decode()} bytes exceeds max_body_bytes="
                f"{self.max_body_bytes}; send fewer samples per request"
            )
            return await _json(send, 413, json.dumps({"error": message}).encode())
        content_type = headers.get(b"content-type", b"")
        if scope["method"] == "POST" and content_type.split(b";")[0].strip().lower() in FORM_TYPES:
            message = (
                f"request body sent as {content_type.decode(errors='replace')}; send JSON "
                "with the header Content-Type: application/json "
                "(curl: -H 'content-type: application/json')"
            )
            return await _json(send, 415, json.dumps({"error": message}).encode())
        return await self.app(scope, receive, send)


class MetadataRoute:
    """GET /metadata -> what is served (a mounted app would answer only /metadata/). The
    document is encoded at the first request, by when the worker has filled it in."""

    def __init__(self, app, metadata: dict[str, object]) -> None:
        self.app = app
        self.metadata = metadata
        self.body = b""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") == "/metadata":
            if scope["method"] != "GET":
                return await _json(send, 405, b'{"error": "use GET /metadata"}')
            self.body = self.body or json.dumps(self.metadata).encode()
            return await _json(send, 200, self.body)
        return await self.app(scope, receive, send)


class ConnectionRecycling:
    """ASGI middleware: every `every`-th response of this worker asks the client to close its
    keep-alive connection (`Connection: close`), like nginx's `keepalive_requests`.

    BentoML's workers accept from one shared socket, and a client that opens its connections
    at once can land them all on one worker while the others idle (BentoML #5426; in the
    serving benchmark, a run with one worker's worth of req/s). A busy worker answers more
    requests, so it hands back more connections, and their reconnects go to whichever worker
    accepts first: usually an idle one. HTTP clients reconnect after such a response without
    an error; the cost is one TCP handshake per `every` requests.
    """

    def __init__(self, app, every: int) -> None:
        if every < 1:
            raise ValueError(f"ConnectionRecycling every={every}: use a count >= 1")
        self.app = app
        self.every = every
        self.responses = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.responses += 1
        if self.responses % self.every:
            return await self.app(scope, receive, send)

        async def send_closing(message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, send_closing)


async def _json(send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
