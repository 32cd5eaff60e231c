"""Benchmark: what a team's concurrency costs each store. With 1, 2 and 4 clients at once,
side by side against the local sqlite store and the team stack's tracking server
(PostgreSQL, S3 artifacts through the server):

- trainings per minute: that many `pipelines/train.py` processes started together (MLP,
  2 short epochs, logging, registration, the gate), counted when the last one ends;
- registry operations per second: that many processes each reading the champion and moving
  the challenger alias in a loop for a fixed time, started together.

    python -m bench.team      # writes the "Team" section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import REPORT, ROOT, markdown_table, publish
from tests.conftest import FAST
from tests.team import running_stack

CLIENTS = (1, 2, 4)
MODEL = "bench-team"

REGISTRY_LOOP = """
import sys, time
from mlflow import MlflowClient
uri, name, start, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
client = MlflowClient(uri)
client.get_registered_model(name)
time.sleep(max(0.0, start - time.time()))
done = failed = 0
while time.time() < start + seconds:
    try:
        champion = client.get_model_version_by_alias(name, "champion")
        client.set_registered_model_alias(name, "challenger", champion.version)
        done += 2
    except Exception:
        failed += 1
print(done, failed)
"""


def start_training(uri: str, data: Path, out: Path, seed: int) -> subprocess.Popen:
    command = [
        sys.executable, str(ROOT / "pipelines" / "train.py"), *FAST, "model=mlp",
        f"data.path={data}", f"logger.tracking_uri={uri}", f"registry.model_name={MODEL}",
        f"hydra.run.dir={out}", f"paths.mlflow_artifacts_dir={out.parent / 'mla'}",
        f"seed={seed}",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def trainings(uri: str, data: Path, workdir: Path, clients: int) -> float:
    """Wall seconds for `clients` trainings started together."""
    start = time.perf_counter()
    jobs = [start_training(uri, data, workdir / f"run-{clients}-{i}", i) for i in range(clients)]
    errors = [job.communicate()[1] for job in jobs]
    seconds = time.perf_counter() - start
    if any(job.returncode for job in jobs):
        raise RuntimeError(f"a training failed against {uri}:\n{errors[0][-2000:]}")
    return seconds


def start_registry_client(uri: str, start: float, seconds: float) -> subprocess.Popen:
    command = [sys.executable, "-c", REGISTRY_LOOP, uri, MODEL, str(start), str(seconds)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def registry_ops(uri: str, clients: int, seconds: float) -> tuple[float, int]:
    """Operations per second over all clients, and the operations that failed."""
    start = time.time() + 8  # after every process has imported mlflow
    jobs = [start_registry_client(uri, start, seconds) for _ in range(clients)]
    counts = [job.communicate()[0].split() for job in jobs]
    if any(job.returncode for job in jobs):
        raise RuntimeError(f"a registry client failed against {uri}")
    return sum(int(c[0]) for c in counts) / seconds, sum(int(c[1]) for c in counts)


def measure(uri: str, data: Path, workdir: Path, seconds: float) -> dict[int, tuple]:
    trainings(uri, data, workdir, 1)  # the first version, and a warm store
    return {
        clients: (trainings(uri, data, workdir, clients), *registry_ops(uri, clients, seconds))
        for clients in CLIENTS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10, help="per registry measurement")
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args()
    from mlops.data.builtin import write_digits

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = write_digits(workdir / "data")
        results = {"sqlite (local file)": measure(
            f"sqlite:///{workdir / 'mlflow.db'}", data, workdir / "sqlite", args.seconds
        )}  # fmt: skip
        with running_stack(workers=2) as stack:  # as make server runs it
            results["tracking server (PostgreSQL, S3)"] = measure(
                stack.tracking_url, data, workdir / "server", args.seconds
            )
    rows = [
        [store, str(clients), f"{clients / wall * 60:.1f}", f"{wall:.1f}",
         f"{ops:.0f}", str(failed)]
        for store, by_clients in results.items()
        for clients, (wall, ops, failed) in by_clients.items()
    ]  # fmt: skip
    table = markdown_table(
        ["store", "clients", "trainings/min", "wall s", "registry ops/s", "failed ops"], rows
    )
    method = (
        f"Per client count, the trainings start together and are timed until the last "
        f"ends; the registry clients read `@champion` and move `@challenger` for "
        f"{args.seconds:.0f} s each (2 operations a loop). Both stores on this machine: "
        "the server's CPU is the trainings' CPU. The server runs as `make server` runs it "
        "(2 workers)."
    )
    publish("team", method, table, args.output)


if __name__ == "__main__":
    main()
