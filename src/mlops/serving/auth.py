"""API keys for a served version: clients send `Authorization: Bearer <key>`; the service
keeps only the keys' sha256 (a keys file, one `sha256:<hex> <name>` per line, re-read
within a second of a change, so a key is added or revoked without a rebuild). `auto` asks for a key
on any address but loopback, so `make serve` on 127.0.0.1 stays open and a Bento served
on a network does not."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

OPEN_PATHS = ("/livez", "/readyz", "/healthz")  # probes never need a key
LOOPBACK = ("127.0.0.1", "::1", "localhost")
MODES = ("auto", "on", "off")
RECHECK_S = 1.0  # a key added or revoked counts within this long


def key_hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def read_keys(path: Path) -> dict[str, str]:
    """hash -> name, from a keys file (missing file: no keys)."""
    keys = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split(maxsplit=1)
            if parts and parts[0].startswith("sha256:"):
                keys[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return keys


def new_key(path: Path, name: str) -> str:
    """A random key, its hash appended to the keys file; the key itself is shown once."""
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"key name {name!r}: use one word, such as the client's name")
    if name in read_keys(path).values():
        raise ValueError(f"a key named {name!r} exists in {path}: revoke it first, or pick "
                         "another name")  # fmt: skip
    key = "mlops_" + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as keys:
        keys.write(f"{key_hash(key)} {name}\n")
    path.chmod(0o600)
    return key


def revoke_key(path: Path, name: str) -> None:
    lines = path.read_text().splitlines() if path.is_file() else []
    kept = [line for line in lines if line.split(maxsplit=1)[1:] != [name]]
    if len(kept) == len(lines):
        raise ValueError(f"no key named {name!r} in {path} (mlops keys list)")
    path.write_text("".join(f"{line}\n" for line in kept))


def keys_asked(mode: str, scope) -> bool:
    """Whether this connection is asked for a key: `on`, or `auto` on a non-loopback address."""
    if mode == "auto":
        return (scope.get("server") or ("",))[0] not in LOOPBACK
    return mode == "on"


class ApiKeys:
    """ASGI middleware: 401 with `WWW-Authenticate` for a request without a valid key; the
    probes stay open, and /metrics unless `protect_metrics`. An unknown key's hash is
    compared with every stored hash, in constant time, so a wrong key's answer takes as
    long whatever it shares with a good one; a header once found valid is remembered
    (until the keys file changes), which spares the hashing on every request after the
    first; keys are never logged."""

    def __init__(self, app, mode: str, keys_file: str, protect_metrics: bool = False) -> None:
        self.app, self.mode = app, mode
        self.path = Path(os.environ.get("MLOPS_API_KEYS_FILE") or keys_file)
        self.protect_metrics = protect_metrics
        self.stamp: tuple[float, int] | None = None
        self.hashes: list[bytes] = []
        self.accepted: set[bytes] = set()  # Authorization headers found valid
        self.next_check = 0.0

    def required(self, scope) -> bool:
        if scope["path"] in OPEN_PATHS or (
            scope["path"] == "/metrics" and not self.protect_metrics
        ):
            return False
        return keys_asked(self.mode, scope)

    def current_hashes(self) -> list[bytes]:
        now = time.monotonic()
        if now < self.next_check:  # the file's stat at most once a second, off most requests
            return self.hashes
        self.next_check = now + RECHECK_S
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except OSError:
            stamp = None
        if stamp != self.stamp:  # added or revoked since the last look
            self.stamp = stamp
            self.hashes = [h.encode() for h in read_keys(self.path)]
            self.accepted = set()
        return self.hashes

    def valid(self, scope) -> bool:
        header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
        hashes = self.current_hashes()
        if header in self.accepted:  # a set: its lookup compares no prefix of the bytes
            return True
        scheme, _, key = header.partition(b" ")
        offered = key_hash(key.strip().decode(errors="replace")).encode()
        found = False
        for stored in hashes:
            found |= hmac.compare_digest(offered, stored)
        if found and scheme.lower() == b"bearer":
            self.accepted.add(header)  # forgotten when the keys file changes
            return True
        return False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.required(scope) or self.valid(scope):
            return await self.app(scope, receive, send)
        body = json.dumps({"error": "send a valid API key: Authorization: Bearer <key> "
                           "(mlops keys new)"}).encode()  # fmt: skip
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()),
                   (b"www-authenticate", b'Bearer realm="mlops"')]  # fmt: skip
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
