"""HTTPS for `mlops serve`: deploy.tls names a certificate and its key, handed to BentoML's
server, which wraps its socket in TLS. The pair is checked here first, so a wrong path or
a key of another certificate is one line naming the setting, not workers that die at
start one after another."""

from __future__ import annotations

import ssl
from pathlib import Path

from mlops.errors import ConfigError


def tls_files(tls) -> tuple[Path, Path] | None:
    """(certfile, keyfile) from deploy.tls, checked to load as a pair; None when TLS is off."""
    certfile, keyfile = (tls or {}).get("certfile"), (tls or {}).get("keyfile")
    if not certfile and not keyfile:
        return None
    if not certfile or not keyfile:
        missing = "deploy.tls.keyfile" if certfile else "deploy.tls.certfile"
        raise ConfigError(f"{missing} is not set: HTTPS needs both the certificate (certfile) "
                          "and its private key (keyfile), PEM files")  # fmt: skip
    paths = Path(certfile).resolve(), Path(keyfile).resolve()
    for key, path in zip(("certfile", "keyfile"), paths, strict=True):
        if not path.is_file():
            raise ConfigError(f"deploy.tls.{key}={path}: no such file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(*paths, password="")
    except (ssl.SSLError, ValueError) as error:
        raise ConfigError(
            f"deploy.tls: {paths[0]} and {paths[1]} do not load as a certificate and its "
            f"key ({error}): both must be PEM, the key unencrypted and the certificate's own"
        ) from None
    return paths


def serve_tls_arguments(paths: tuple[Path, Path] | None) -> list[str]:
    """`bentoml serve`'s options for the pair (hidden in its --help in 1.4, the same
    arguments bentoml.serve() takes as ssl_certfile/ssl_keyfile; test_serving serves
    over them, so an upgrade that drops them fails there)."""
    if paths is None:
        return []
    return ["--ssl-certfile", str(paths[0]), "--ssl-keyfile", str(paths[1])]
