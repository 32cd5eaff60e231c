"""One built Bento served as several variants at once (copies with deployment.json
changed, so model, code and every other setting are the same), measured in turns: what
the monitoring and soak benchmarks compare side by side."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.loadgen import Load, run_wrk
from bench.serving import CONNECTIONS, median_load
from tests.servers import free_port, running_server

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def built_bento() -> Iterator[tuple[Path, Path]]:
    """(a throwaway working folder, the serving benchmark's CNN built as a Bento in it)."""
    from bench.serving import train_and_deploy

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ["BENTOML_HOME"] = str(workdir / "bentoml")  # before bentoml is imported
        _, _, bento_tag = train_and_deploy(workdir)
        import bentoml

        yield workdir, Path(bentoml.get(bento_tag).path)


def variant(bento_dir: Path, folder: Path, **settings) -> Path:
    """A copy of the Bento whose deployment.json has `settings`."""
    shutil.copytree(bento_dir, folder)
    deployment = folder / "src" / "deployment.json"
    deployment.write_text(json.dumps({**json.loads(deployment.read_text()), **settings}, indent=2))
    return folder


def percent_change(value: float, baseline: float) -> str:
    return f"{100 * (value / baseline - 1):+.1f}%"


@contextlib.contextmanager
def served_variants(
    bentos: dict[str, Path], workdir: Path, env: dict[str, str] | None = None
) -> Iterator[dict[str, tuple[str, subprocess.Popen]]]:
    """name -> (base URL, server process), all up at once, each with a BentoML store of its
    own (servers sharing one share its Prometheus directory) and a payload folder."""
    with contextlib.ExitStack() as stack:
        served = {}
        for n, (name, bento) in enumerate(bentos.items()):
            home = workdir / f"bentoml-{n}"
            shutil.copytree(workdir / "bentoml", home)
            port = free_port()
            process = stack.enter_context(running_server(
                [str(BIN / "bentoml"), "serve", str(bento), "--host", "127.0.0.1",
                 "--port", str(port)],
                f"http://127.0.0.1:{port}/readyz", workdir / f"server-{n}.log",
                env={**os.environ, "BENTOML_HOME": str(home),
                     "MLOPS_PAYLOAD_DIR": str(workdir / f"payloads-{n}"), **(env or {})},
            ))  # fmt: skip
            served[name] = (f"http://127.0.0.1:{port}", process)
        yield served


def in_turns(
    urls: dict[str, str], scripts: dict[str, Path], seconds: int, repeats: int
) -> dict[str, dict[str, list[Load]]]:
    """wrk on each URL in turn, the order rotated every round, so that a noisy minute of
    the machine falls on all of them; after a warm-up of each."""
    for url in urls.values():
        for script in scripts.values():
            run_wrk(url, script, CONNECTIONS, 3)
    runs: dict[str, dict[str, list[Load]]] = {name: {kind: [] for kind in scripts}
                                               for name in urls}  # fmt: skip
    names = list(urls)
    for round_ in range(repeats):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for kind, script in scripts.items():
            for name in order:
                runs[name][kind].append(run_wrk(urls[name], script, CONNECTIONS, seconds))
    for name in names:
        print(name, {kind: median_load(x) for kind, x in runs[name].items()}, flush=True)
    return runs
