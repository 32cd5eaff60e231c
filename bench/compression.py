"""Benchmark: `make compress` on the three default models (accuracy, size and forward
latency of the torch graph, its ONNX export and its int8 variant), then the CNN served
three ways with the serving benchmark's load: the torch Bento, the ONNX Bento and LitServe
serving the same ONNX model, with deploy time, worker memory under load and the
installed size of what each Bento pins.

    python -m bench.compression       # writes the "Compression" section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from bench.loadgen import Load, post_script, wrk_binary
from bench.report import REPORT, ROOT, markdown_table, met, publish, ratio
from bench.serving import BATCH, CONNECTIONS, median_load, payload
from bench.serving import measure as serving_measure
from mlops.quiet import artifact_progress_bars_only_when_asked
from tests.pinned import pinned_distributions
from tests.servers import running_server

BIN = Path(sys.executable).parent
FAMILIES = {"mlp": ["model=mlp"], "cnn": ["model=cnn"], "rnn": ["model=rnn"]}
TORCH, ONNX_BENTO, INT8_BENTO, LITSERVE = (
    "torch Bento (compiled, make deploy)",
    "ONNX Bento (@onnx)",
    "ONNX Bento (@onnx-int8)",
    "LitServe, same ONNX model",
)


def config(workdir: Path, family: str):
    from mlops.config import compose_config

    return compose_config(ROOT / "conf", [
        *FAMILIES[family], "trainer.max_epochs=5", "~callbacks.rich_progress_bar",
        "+trainer.enable_progress_bar=false", f"registry.model_name=bench-{family}",
        f"logger.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
        f"paths.output_dir={workdir / 'run' / family}",
        f"paths.mlflow_artifacts_dir={workdir / 'art'}",
        f"paths.bentoml_home={workdir / 'bentoml'}", f"paths.bento_build_dir={workdir / 'build'}",
        f"paths.payload_dir={workdir / 'payloads'}",
    ])  # fmt: skip


def compress_families(workdir: Path) -> dict[str, object]:
    """family -> (the compression's result, its config)."""
    from mlflow import MlflowClient

    from mlops.compress.run import compress
    from pipelines.train import train

    results = {}
    for family in FAMILIES:
        cfg = config(workdir, family)
        trained = train(cfg)
        client = MlflowClient(cfg.logger.tracking_uri)
        results[family] = (compress(cfg, client, trained.model_name, trained.model_version), cfg)
    return results


def compression_table(results: dict) -> str:
    from mlops.compress.report import size_text

    rows, goals = [], []
    for family, (result, _) in results.items():
        fp32 = next(row for row in result.rows if row.variant == "onnx")
        for row in result.rows:
            registered = row.registered if not row.refusals else "no: " + row.refusals[0]
            rows.append([
                family, row.variant, f"{row.accuracy:.4f}", f"{row.drop:+.4f}",
                f"{row.agreement:.4f}", size_text(row.size_bytes),
                ratio(fp32.size_bytes, row.size_bytes), f"{row.latency_b1_ms * 1000:.0f} us",
                f"{row.latency_batch_ms * 1000:.0f} us", registered,
            ])  # fmt: skip
        int8 = next(row for row in result.rows if row.variant == "onnx-int8")
        if family != "rnn":
            smaller = fp32.size_bytes / int8.size_bytes
            goals.append([f"{family}: int8 size vs fp32 ONNX", f"{smaller:.2f}x smaller", ">= 3x",
                          met(smaller >= 3)])  # fmt: skip
            goals.append([f"{family}: int8 accuracy drop", f"{int8.drop:+.4f}", "<= 0.01",
                          met(int8.drop <= 0.01)])  # fmt: skip
    header = ["model", "variant", "accuracy", "drop", "agreement", "size", "fp32 ONNX / size",
              "forward b1", f"forward b{BATCH}", "registered"]  # fmt: skip
    goal_header = ["goal", "measured", "target", "met"]
    return f"{markdown_table(header, rows)}\n\n{markdown_table(goal_header, goals)}"


def installed_bytes(requirements: list[str]) -> int:
    """Bytes on disk of the pinned distributions and everything they require, as installed
    here."""
    total = 0
    for installed in pinned_distributions(requirements):
        for file in installed.files or []:
            path = Path(installed.locate_file(file))
            total += path.stat().st_size if path.is_file() else 0
    return total


class MemoryWatch:
    """The largest resident set (RSS) and unique set (USS: what the process alone holds,
    not the libraries it shares) of any one process under `root`, sampled under load."""

    def __init__(self, root: int) -> None:
        self.root, self.rss, self.uss, self.stop = root, 0, 0, threading.Event()

    def sample(self) -> None:
        import psutil

        while not self.stop.is_set():
            try:
                for child in psutil.Process(self.root).children(recursive=True):
                    memory = child.memory_full_info()
                    self.rss, self.uss = max(self.rss, memory.rss), max(self.uss, memory.uss)
            except psutil.Error:
                pass
            time.sleep(0.2)


@contextlib.contextmanager
def watched(process) -> Iterator[MemoryWatch]:
    watch = MemoryWatch(process.pid)
    sampler = threading.Thread(target=watch.sample, daemon=True)
    sampler.start()
    try:
        yield watch
    finally:
        watch.stop.set()
        sampler.join()


def measure(
    start: Callable[[int], AbstractContextManager],
    path: str,
    scripts: dict[str, Path],
    seconds: int,
    repeats: int,
) -> tuple[dict[str, Load], MemoryWatch]:
    """Median load per request kind (the serving benchmark's runs), and the peak worker
    memory under it."""
    watches: list[MemoryWatch] = []

    @contextlib.contextmanager
    def under_load(process) -> Iterator[None]:
        with watched(process) as watch:
            watches.append(watch)
            yield

    runs = serving_measure(start, path, scripts, seconds, repeats, under_load)
    return {name: median_load(loads) for name, loads in runs.items()}, watches[0]


def servers(workdir: Path, bentos: dict[str, str], onnx_folder: Path) -> dict:
    from bench.serving import FLOOR

    env = {**os.environ, "BENTOML_HOME": str(workdir / "bentoml")}

    def bento(tag: str) -> Callable[[int], AbstractContextManager]:
        def start(port: int) -> AbstractContextManager:
            command = [str(BIN / "bentoml"), "serve", tag, "--host", "127.0.0.1",
                       "--port", str(port)]  # fmt: skip
            return running_server(command, f"http://127.0.0.1:{port}/readyz",
                                  workdir / f"{tag.replace(':', '-')}.log", env=env)  # fmt: skip

        return start

    def litserve(port: int) -> AbstractContextManager:
        command = [sys.executable, "-m", "bench.litserve_onnx", str(onnx_folder), str(port)]
        return running_server(command, f"http://127.0.0.1:{port}/health",
                              workdir / "litserve.log", cwd=ROOT)  # fmt: skip

    def bentoml_floor(port: int) -> AbstractContextManager:  # what BentoML itself holds
        command = [str(BIN / "bentoml"), "serve", "bench.bentoml_floor:BentoMLFloor",
                   "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        floor_env = {**env, "BENTOML_HOME": str(workdir / "bentoml-floor")}
        return running_server(command, f"http://127.0.0.1:{port}/readyz",
                              workdir / "bentoml-floor.log", cwd=ROOT, env=floor_env)  # fmt: skip

    return {**{name: (bento(tag), "/predict") for name, tag in bentos.items()},
            LITSERVE: (litserve, "/predict"), FLOOR: (bentoml_floor, "/predict")}  # fmt: skip


def serving_tables(runs: dict, deploy_s: dict, installed: dict) -> str:
    rows = []
    for name, (loads, memory) in runs.items():
        rows.append([
            name, f"{loads['single'].requests_per_s:,.0f}", f"{loads['single'].p99_ms:.1f} ms",
            f"{loads['batch'].requests_per_s * BATCH:,.0f}", f"{loads['batch'].p99_ms:.1f} ms",
            str(loads["single"].errors + loads["batch"].errors),
            f"{memory.rss / 2**20:.0f} / {memory.uss / 2**20:.0f} MiB",
            f"{deploy_s[name]:.1f} s" if name in deploy_s else "-",
            f"{installed[name] / 2**20:.0f} MiB" if name in installed else "-",
        ])  # fmt: skip
    header = ["server", "1-sample req/s", "p99", f"{BATCH}-sample samples/s", "p99", "errors",
              "worker RSS / USS under load", "make deploy", "installed pins"]  # fmt: skip
    torch_loads, torch_peak = runs[TORCH]
    onnx_loads, onnx_peak = runs[ONNX_BENTO]
    lit_loads, _ = runs[LITSERVE]
    goals = []
    for kind in ("single", "batch"):
        ours, base = onnx_loads[kind].requests_per_s, torch_loads[kind].requests_per_s
        goals.append([f"ONNX Bento vs torch Bento, {kind}", ratio(ours, base), ">= 1x",
                      met(ours >= base)])  # fmt: skip
    goals.append(["make deploy time, ONNX vs torch", ratio(deploy_s[ONNX_BENTO], deploy_s[TORCH]),
                  "<= 0.5x", met(deploy_s[ONNX_BENTO] <= 0.5 * deploy_s[TORCH])])  # fmt: skip
    for kind in ("rss", "uss"):
        ours, base = getattr(onnx_peak, kind), getattr(torch_peak, kind)
        goals.append([f"worker memory ({kind.upper()}), ONNX vs torch", ratio(ours, base),
                      "<= 0.33x", met(ours <= base / 3)])  # fmt: skip
    for kind in ("single", "batch"):
        ours, lit = onnx_loads[kind].requests_per_s, lit_loads[kind].requests_per_s
        goals.append([f"ONNX Bento vs LitServe, {kind}", ratio(ours, lit), "> 1x",
                      met(ours > lit)])  # fmt: skip
    return (f"{markdown_table(header, rows)}\n\n"
            f"{markdown_table(['goal', 'measured', 'target', 'met'], goals)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args()
    wrk_binary()
    artifact_progress_bars_only_when_asked()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ["BENTOML_HOME"] = str(workdir / "bentoml")  # before bentoml is imported
        import bentoml
        import mlflow

        from mlops.serving.deploy import deploy

        results = compress_families(workdir)
        compressed = compression_table(results)
        result, cfg = results["cnn"]
        deploy_s, bentos, installed = {}, {}, {}
        # the first deploy of a process pays BentoML's first build: an ONNX one, not torch's
        for name, ref in ((INT8_BENTO, "@onnx-int8"), (ONNX_BENTO, "@onnx"),
                          (TORCH, result.parent_version)):  # fmt: skip
            started = time.perf_counter()
            deployed = deploy(cfg, result.model_name, ref)
            deploy_s[name] = time.perf_counter() - started
            bentos[name] = deployed.bento_tag
            pins = bentoml.get(deployed.bento_tag).path_of("env/python/requirements.txt")
            installed[name] = installed_bytes(Path(pins).read_text().splitlines())
        bentos = {name: bentos[name] for name in (TORCH, ONNX_BENTO, INT8_BENTO)}
        mlflow.set_tracking_uri(cfg.logger.tracking_uri)
        onnx_folder = Path(mlflow.artifacts.download_artifacts(
            f"models:/{result.model_name}@onnx", dst_path=str(workdir / "onnx-model")))  # fmt: skip
        scripts = {
            "single": post_script(workdir / "single.lua", payload(1)),
            "batch": post_script(workdir / "batch.lua", payload(BATCH)),
        }
        runs = {}
        for name, (start, path) in servers(workdir, bentos, onnx_folder).items():
            runs[name] = measure(start, path, scripts, args.seconds, args.repeats)
            print(name, json.dumps({k: v.requests_per_s for k, v in runs[name][0].items()}))
        served = serving_tables(runs, deploy_s, installed)
    method = (
        "Each default model trained for 5 epochs and compressed by `make compress`'s code "
        "(conf/compress/default.yaml: forward latency is the median of one process's calls, "
        "1 thread, the same minutes for the torch graph and its variants). Then the CNN "
        f"served three ways under wrk (1 thread, {CONNECTIONS} connections, {args.seconds} s "
        f"per run, median of {args.repeats} runs after a warm-up): its torch Bento as `make "
        "deploy` builds it (compiled), its ONNX Bentos, and LitServe (bench/litserve_onnx.py: "
        "the ONNX model in ONNX Runtime, 2 workers, 1 thread each, no batching) with the same "
        "JSON body; BentoML with no model (bench/bentoml_floor.py) for what BentoML itself "
        "costs. Worker memory: the largest process of the server under that load, resident "
        "(RSS) and unique to it (USS: without the libraries it shares). Installed "
        "pins: bytes on disk of what the Bento's requirements.txt pins, with their "
        "dependencies, as installed here."
    )
    publish("compression", method, f"{compressed}\n\nServing the CNN:\n\n{served}", args.output)


if __name__ == "__main__":
    main()
