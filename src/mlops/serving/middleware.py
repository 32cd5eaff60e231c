"""Small ASGI middlewares: refuse oversized and form bodies from their headers; answer
GET /metadata; spread keep-alive connections over the workers; 400 answers as documented."""

from __future__ import annotations

import json

from mlops.serving.auth import OPEN_PATHS, keys_asked

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


async def rewritten(app, scope, receive, send, status: int, rewrite) -> None:
    """Run `app`; an answer of `status` is held whole and sent as `rewrite(body)`, with its
    Content-Length set again. Other answers pass untouched, unbuffered."""
    held: dict = {}

    async def send_rewritten(message) -> None:
        if message["type"] == "http.response.start" and message["status"] == status:
            held["start"] = message
            return
        if "start" not in held:
            return await send(message)
        held["body"] = held.get("body", b"") + message.get("body", b"")
        if message.get("more_body"):
            return
        body = rewrite(held["body"])
        headers = [(k, v) for k, v in held["start"].get("headers", [])
                   if k.lower() != b"content-length"]  # fmt: skip
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**held["start"], "headers": headers})
        await send({"type": "http.response.body", "body": body})

    await app(scope, receive, send_rewritten)


class ValidationErrorsAsText:
    """BentoML answers a request that fails validation with 400, `{"error": "1 validation
    error for Input", "detail": [pydantic's error objects]}`, while its OpenAPI document
    says `detail` is a string. Here such a body becomes what the document says, and says
    more: `error` is the first reason itself, `detail` every reason with where it is
    (`items.0.label: ...`)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":  # validation is of bodies
            return await self.app(scope, receive, send)
        return await rewritten(self.app, scope, receive, send, 400, as_text)


class DocumentedRefusals:
    """/docs.json as BentoML writes it, plus what the middlewares here answer: 413 and 415
    on every POST, whose body is required (an empty one is refused with 400), and with API
    keys on, the bearer scheme and 401 on every operation that needs one."""

    def __init__(self, app, auth: str = "off", protect_metrics: bool = False) -> None:
        self.app, self.auth = app, auth
        self.open = OPEN_PATHS if protect_metrics else (*OPEN_PATHS, "/metrics")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/docs.json":
            return await self.app(scope, receive, send)
        if keys_asked(self.auth, scope):

            def rewrite(body: bytes) -> bytes:
                return with_bearer(with_refusals(body), self.open)
        else:
            rewrite = with_refusals
        return await rewritten(self.app, scope, receive, send, 200, rewrite)


REFUSALS = {
    "413": "Request body larger than the deployment's max_body_bytes",
    "415": "Request body sent as a form: send JSON (Content-Type: application/json)",
}


def with_refusals(body: bytes) -> bytes:
    try:
        document = json.loads(body)
        operations = [op for path in document["paths"].values() for m, op in path.items()
                      if m == "post"]  # fmt: skip
    except (ValueError, KeyError, AttributeError):
        return body
    error = {"type": "object", "required": ["error"],
             "properties": {"error": {"type": "string"}}}  # fmt: skip
    for operation in operations:
        if "requestBody" in operation:
            operation["requestBody"]["required"] = True
        for status, description in REFUSALS.items():
            operation.setdefault("responses", {})[status] = {
                "description": description,
                "content": {"application/json": {"schema": error}},
            }
    return json.dumps(document).encode()


def with_bearer(body: bytes, open_paths: tuple[str, ...]) -> bytes:
    try:
        document = json.loads(body)
        paths = document["paths"]
    except (ValueError, KeyError):
        return body
    schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearer"] = {"type": "http", "scheme": "bearer",
                         "description": "an API key: mlops keys new NAME"}  # fmt: skip
    for path, operations in paths.items():
        if path in open_paths:
            continue
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["security"] = [{"bearer": []}]
                operation["responses"]["401"] = {"description": "No valid API key"}
    return json.dumps(document).encode()


def as_text(body: bytes) -> bytes:
    """A 400 body with pydantic's error list as strings; any other body as it was."""
    try:
        answer = json.loads(body)
        errors = answer["detail"]
        if not isinstance(errors, list) or not errors:
            return body
        reasons = []
        for error in errors:
            where = ".".join(str(part) for part in error.get("loc", ()))
            reason = str(error.get("msg", "")).removeprefix("Value error, ")
            reasons.append(f"{where}: {reason}" if where else reason)
    except (ValueError, KeyError, TypeError, AttributeError):
        return body
    first = reasons[0].split(": ", 1)[-1] if errors[0].get("loc") else reasons[0]
    return json.dumps({"error": first, "detail": "; ".join(reasons)}).encode()


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
