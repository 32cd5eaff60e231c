"""Benchmark: the deployed BentoML service against `mlflow models serve` of the same
registered version, BentoML with no model (what BentoML itself costs) and a bare HTTP
endpoint (the ceiling), with the same wrk load and the same JSON payload.

    python -m bench.serving           # writes the "Serving" section of docs/benchmarks.md

It trains and registers a CNN in a throwaway store, deploys it with `mlops deploy`'s code
into a throwaway BentoML home, starts each server on a free 127.0.0.1 port, and stops it
(and its children) afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from bench.loadgen import Load, post_script, run_wrk, wrk_binary
from bench.report import REPORT, ROOT, markdown_table, met, publish, ratio
from tests.servers import free_port, running_server

BIN = Path(sys.executable).parent
CONNECTIONS = 32
BATCH = 64
OURS, MLFLOW, BARE = "mlops (BentoML)", "mlflow models serve", "bare HTTP (uvicorn + Starlette)"
FLOOR = "BentoML, no model (same settings)"
TARGETS = {"vs_mlflow": 5.0, "vs_bare": 0.5, "p99_ms": 20.0}


def train_and_deploy(workdir: Path) -> tuple[str, str, str]:
    """A registered CNN and its Bento: (tracking URI, model URI, Bento tag)."""
    from mlops.config import compose_config
    from mlops.serving.deploy import deploy
    from pipelines.train import train

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    overrides = [
        "model=cnn",
        "trainer.max_epochs=5",
        "~callbacks.rich_progress_bar",
        "+trainer.enable_progress_bar=false",
        f"logger.tracking_uri={uri}",
        f"paths.output_dir={workdir / 'run'}",
        f"paths.mlflow_artifacts_dir={workdir / 'art'}",
        f"paths.bentoml_home={workdir / 'bentoml'}",
        f"paths.bento_build_dir={workdir / 'build'}",
        f"paths.payload_dir={workdir / 'payloads'}",
    ]
    cfg = compose_config(ROOT / "conf", overrides)
    result = train(cfg)
    deployed = deploy(cfg, result.model_name, result.model_version)
    return uri, f"models:/{result.model_name}/{result.model_version}", deployed.bento_tag


def payload(samples: int) -> str:
    from mlops.data.arrays import load_npz

    x = load_npz(ROOT / "data" / "digits" / "digits.npz")["x_test"][:samples]
    return json.dumps({"inputs": np.asarray(x, dtype=np.float32).tolist()})


def servers(workdir: Path, tracking_uri: str, model_uri: str, bento_tag: str):
    """name -> (start: port -> context manager, predict path)."""
    # `mlflow models serve` execs `uvicorn` from PATH
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    def bentoml_server(port: int) -> AbstractContextManager:
        return running_server(
            [str(BIN / "bentoml"), "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)],
            f"http://127.0.0.1:{port}/readyz",
            workdir / "bentoml.log",
            env={**env, "BENTOML_HOME": str(workdir / "bentoml")},
        )

    def mlflow_server(port: int) -> AbstractContextManager:
        return running_server(
            [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            f"http://127.0.0.1:{port}/health",
            workdir / "mlflow-serve.log",
            env={**env, "MLFLOW_TRACKING_URI": tracking_uri},
        )  # fmt: skip

    def bentoml_floor(port: int) -> AbstractContextManager:
        return running_server(
            [str(BIN / "bentoml"), "serve", "bench.bentoml_floor:BentoMLFloor",
             "--host", "127.0.0.1", "--port", str(port)],
            f"http://127.0.0.1:{port}/readyz",
            workdir / "bentoml-floor.log",
            env={**env, "BENTOML_HOME": str(workdir / "bentoml-floor")},
            cwd=ROOT,
        )  # fmt: skip

    def bare_server(*uvicorn_options: str) -> Callable[[int], AbstractContextManager]:
        def start(port: int) -> AbstractContextManager:
            return running_server(
                [sys.executable, "-m", "uvicorn", "bench.echo_server:app", "--host", "127.0.0.1",
                 "--port", str(port), "--no-access-log", "--log-level", "warning",
                 *uvicorn_options],
                f"http://127.0.0.1:{port}/readyz",
                workdir / "bare.log",
                cwd=ROOT,
            )  # fmt: skip

        return start

    return {
        OURS: (bentoml_server, "/predict"),
        MLFLOW: (mlflow_server, "/invocations"),
        # BentoML's own per-request cost: the deployed service's settings, no model
        FLOOR: (bentoml_floor, "/predict"),
        # the ceiling: the same uvicorn stack (uvloop + httptools) as the Bento
        BARE: (bare_server(), "/predict"),
        # the reference ceiling: uvicorn's pure-Python fallbacks
        "bare HTTP, pure-Python uvicorn (asyncio + h11)": (
            bare_server("--loop", "asyncio", "--http", "h11"),
            "/predict",
        ),
    }


def measure(
    start: Callable[[int], AbstractContextManager],
    path: str,
    scripts: dict[str, Path],
    seconds: int,
    repeats: int,
    under_load: Callable[[subprocess.Popen], AbstractContextManager] | None = None,
) -> dict[str, list[Load]]:
    """`repeats` wrk runs per script after a warm-up; `under_load(server process)` is
    entered around the timed runs (the compression benchmark samples memory in it)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}{path}"
    with start(port) as process:
        for script in scripts.values():
            run_wrk(url, script, CONNECTIONS, 3)  # warm-up: first batches, caches, JIT paths
        with under_load(process) if under_load else contextlib.nullcontext():
            return {
                name: [run_wrk(url, script, CONNECTIONS, seconds) for _ in range(repeats)]
                for name, script in scripts.items()
            }


def median_load(loads: list[Load]) -> Load:
    return Load(
        requests_per_s=statistics.median(x.requests_per_s for x in loads),
        p50_ms=statistics.median(x.p50_ms for x in loads),
        p99_ms=statistics.median(x.p99_ms for x in loads),
        requests=sum(x.requests for x in loads),
        errors=sum(x.errors for x in loads),
    )


def spread(loads: list[Load]) -> str:
    rates = [x.requests_per_s for x in loads]
    return f"{min(rates):,.0f} to {max(rates):,.0f}"


def target_checks(results: dict[str, dict[str, Load]], kind: str) -> str:
    """The issue's targets, checked on one kind of request ("single" or "batch")."""
    ours, mlflow_serve, bare = (results[n][kind].requests_per_s for n in (OURS, MLFLOW, BARE))
    mine = results[OURS][kind]
    return markdown_table(
        ["mlops target", "measured", "target", "met"],
        [
            ["req/s vs `mlflow models serve`", ratio(ours, mlflow_serve),
             f">= {TARGETS['vs_mlflow']}x", met(ours >= TARGETS["vs_mlflow"] * mlflow_serve)],
            ["req/s vs bare HTTP", ratio(ours, bare),
             f">= {TARGETS['vs_bare']}x", met(ours >= TARGETS["vs_bare"] * bare)],
            ["p99 latency", f"{mine.p99_ms:.1f} ms", f"<= {TARGETS['p99_ms']:.0f} ms",
             met(mine.p99_ms <= TARGETS["p99_ms"])],
            ["errors", str(mine.errors), "0", met(mine.errors == 0)],
        ],
    )  # fmt: skip


def against_floor(results: dict[str, dict[str, Load]], kind: str) -> str:
    ours, floor = (results[n][kind].requests_per_s for n in (OURS, FLOOR))
    return f"The deployed service answers {ratio(ours, floor)} the req/s of BentoML with no model."


def tables(runs: dict[str, dict[str, list[Load]]]) -> str:
    results = {
        name: {kind: median_load(x) for kind, x in kinds.items()} for name, kinds in runs.items()
    }
    single = markdown_table(
        ["server", "req/s", "range of runs", "p50", "p99", "requests", "errors"],
        [
            [
                name,
                f"{load.requests_per_s:,.0f}",
                spread(runs[name]["single"]),
                f"{load.p50_ms:.1f} ms",
                f"{load.p99_ms:.1f} ms",
                f"{load.requests:,}",
                str(load.errors),
            ]
            for name, load in ((n, results[n]["single"]) for n in runs)
        ],
    )
    batched = markdown_table(
        ["server", "req/s", "samples/s", "p50", "p99", "errors"],
        [
            [
                name,
                f"{load.requests_per_s:,.0f}",
                f"{load.requests_per_s * BATCH:,.0f}",
                f"{load.p50_ms:.1f} ms",
                f"{load.p99_ms:.1f} ms",
                str(load.errors),
            ]
            for name, load in ((n, results[n]["batch"]) for n in runs)
        ],
    )
    return (
        f"Single-sample requests, {CONNECTIONS} connections:\n\n{single}\n\n"
        f"{target_checks(results, 'single')}\n\n{against_floor(results, 'single')}\n\n"
        f"Batched requests ({BATCH} samples each), {CONNECTIONS} connections:\n\n{batched}\n\n"
        f"{target_checks(results, 'batch')}\n\n{against_floor(results, 'batch')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args()
    wrk_binary()  # fail before training if the load generator is missing
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ["BENTOML_HOME"] = str(workdir / "bentoml")  # before bentoml is imported
        tracking_uri, model_uri, bento_tag = train_and_deploy(workdir)
        scripts = {
            "single": post_script(workdir / "single.lua", payload(1)),
            "batch": post_script(workdir / "batch.lua", payload(BATCH)),
        }
        runs = {}
        for name, (start, path) in servers(workdir, tracking_uri, model_uri, bento_tag).items():
            runs[name] = measure(start, path, scripts, args.seconds, args.repeats)
            print(name, {kind: median_load(x) for kind, x in runs[name].items()}, flush=True)
    method = (
        f"wrk (1 thread, {CONNECTIONS} connections, {args.seconds} s per run, median of "
        f"{args.repeats} runs after a warm-up; requests and errors summed over runs), the same "
        'JSON body `{"inputs": [...]}` of digits test images to every server, a CNN '
        "trained for 5 epochs, served as deployed by `make deploy` (conf/deploy/default.yaml). "
        "Load generator and server share the machine's cores."
    )
    publish("serving", method, tables(runs), args.output)


if __name__ == "__main__":
    main()
