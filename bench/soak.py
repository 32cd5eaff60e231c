"""Benchmark: the deployed service under a long load, and what API keys cost it (issue 31).

    python -m bench.soak                  # writes the "Soak" section of docs/benchmarks.md
    python -m bench.soak --seconds 600    # a longer soak

One Bento served as three copies, API keys off (twice: how far apart identical servers
measure) and on (deployment.json changed, nothing else), all up at once: single-sample
req/s measured in turns (what the key check costs).
Then the keys-on copy under 32 connections for `--seconds`, in 10 s windows (p99 of each),
every worker's RSS sampled each second, 5xx counted by the service itself (/metrics);
then Schemathesis' longer run against its /docs.json, with a key.
"""

from __future__ import annotations

import argparse
import subprocess
import threading
import time
from pathlib import Path

from bench.loadgen import Load, post_script, run_wrk, wrk_binary
from bench.report import REPORT, markdown_table, publish
from bench.serving import BIN, CONNECTIONS, median_load, payload, spread
from bench.variants import built_bento, in_turns, percent_change, served_variants, variant
from tests.served import metric_sums

KEYS_OFF, KEYS_OFF_AGAIN, KEYS_ON = "API keys off", "API keys off, a second copy", "API keys on"
AUTH_BUDGET_PERCENT = 3.0  # issue 31: keys cost at most this share of single-sample req/s
RSS_FLAT_PERCENT = 5.0  # issue 31: a worker's RSS after the first half stays within this
WINDOW_S = 10


class WorkerMemory(threading.Thread):
    """Each BentoML worker's RSS (MiB), sampled every second: pid -> [(seconds, MiB)]."""

    def __init__(self, server_pid: int) -> None:
        super().__init__(daemon=True)
        self.server_pid, self.start_time = server_pid, time.monotonic()
        self.samples: dict[int, list[tuple[float, float]]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.done.wait(1.0):
            for child in psutil.Process(self.server_pid).children(recursive=True):
                try:
                    if "worker.service" not in " ".join(child.cmdline()):
                        continue
                    rss = child.memory_info().rss / 2**20
                except psutil.Error:  # a worker gone between listing and reading
                    continue
                elapsed = time.monotonic() - self.start_time
                self.samples.setdefault(child.pid, []).append((elapsed, rss))

    def drift(self, after_s: float) -> dict[int, tuple[float, float, float]]:
        """pid -> (RSS at `after_s`, at the end, (max - min) / min in % from then on)."""
        result = {}
        for pid, samples in self.samples.items():
            later = [rss for t, rss in samples if t >= after_s]
            if later:
                result[pid] = (later[0], later[-1], 100 * (max(later) / min(later) - 1))
        return result


def soak(url: str, script: Path, server_pid: int, seconds: int) -> tuple[list[Load], dict]:
    memory = WorkerMemory(server_pid)
    memory.start()
    try:
        windows = [run_wrk(f"{url}/predict", script, CONNECTIONS, WINDOW_S)
                   for _ in range(max(1, seconds // WINDOW_S))]  # fmt: skip
    finally:
        memory.done.set()
        memory.join()
    return windows, memory.drift(after_s=seconds / 2)


def fuzz(url: str, key: str, workdir: Path, examples: int) -> tuple[int, str]:
    """Schemathesis against /docs.json, as test_serving runs it but longer: (exit code,
    its summary lines)."""
    config = workdir / "schemathesis.toml"
    config.write_text('[checks.positive_data_acceptance]\nexpected-statuses = ["2xx", "413"]\n')
    job = subprocess.run(
        [str(BIN / "schemathesis"), "--config-file", str(config), "run", f"{url}/docs.json",
         "--checks", "all", "--exclude-checks", "negative_data_rejection",
         "--phases", "examples,coverage,fuzzing", "--max-examples", str(examples),
         "--seed", "2", "--workers", "2", "--request-timeout", "30",
         "-H", f"Authorization: Bearer {key}"],
        capture_output=True, text=True, cwd=workdir,
    )  # fmt: skip
    lines = [line.strip() for line in job.stdout.splitlines()]
    cases = lines.index("Test cases:") if "Test cases:" in lines else len(lines)
    block = (
        lines[cases + 1 : cases + 1 + lines[cases + 1 :].index("")]
        if "" in lines[cases + 1 :]
        else []
    )
    tested = [line for line in lines if line.startswith(("Tested:", "Operations:"))]
    last = next((line.strip("= ") for line in reversed(lines) if line.startswith("=")), "")
    return job.returncode, "; ".join([*tested, *block, last])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60, help="length of the soak")
    parser.add_argument("--repeats", type=int, default=5, help="runs per copy, auth's cost")
    parser.add_argument("--examples", type=int, default=300, help="Schemathesis, per phase")
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args()
    wrk_binary()
    with built_bento() as (workdir, built):
        from mlops.serving.auth import new_key

        key = new_key(workdir / "keys", "soak")
        # two copies with keys off: how far apart two identical servers measure here
        bentos = {KEYS_OFF: variant(built, workdir / "off", auth="off"),
                  KEYS_OFF_AGAIN: variant(built, workdir / "off-again", auth="off"),
                  KEYS_ON: variant(built, workdir / "on", auth="on")}  # fmt: skip
        # the same request to both: the keys-off copy ignores the header
        script = post_script(workdir / "single.lua", payload(1), {"Authorization": f"Bearer {key}"})
        with served_variants(bentos, workdir, {"MLOPS_API_KEYS_FILE": str(workdir / "keys")}) as up:
            urls = {name: f"{url}/predict" for name, (url, _) in up.items()}
            runs = in_turns(urls, {"single": script}, 10, args.repeats)
            url, process = up[KEYS_ON]
            windows, memory = soak(url, script, process.pid, args.seconds)
            codes = metric_sums(url, "bentoml_service_request_total", "http_response_code")
            fuzzed = fuzz(url, key, workdir, args.examples)
    publish("soak", method(args), tables(runs, windows, memory, codes, fuzzed), args.output)


def method(args: argparse.Namespace) -> str:
    return (
        f"wrk (1 thread, {CONNECTIONS} connections, single-sample bodies of the serving "
        f"benchmark's CNN). Keys' cost: the Bento copied with API keys off (twice) and on, all up, "
        f"10 s runs in turns, median of {args.repeats}. Soak: the keys-on copy for "
        f"{args.seconds} s in {WINDOW_S} s windows, each worker's RSS sampled every second; "
        f"Schemathesis with {args.examples} examples per phase against its /docs.json."
    )


def tables(runs, windows: list[Load], memory: dict, codes: dict, fuzzed: tuple) -> str:
    single = {name: median_load(runs[name]["single"]) for name in runs}
    baseline = (single[KEYS_OFF].requests_per_s + single[KEYS_OFF_AGAIN].requests_per_s) / 2
    cost = 100 * (1 - single[KEYS_ON].requests_per_s / baseline)
    auth = markdown_table(
        ["served", "1-sample req/s", "range of runs", "vs keys off (both copies)", "p99"],
        [[name, f"{load.requests_per_s:,.0f}", spread(runs[name]["single"]),
          percent_change(load.requests_per_s, baseline), f"{load.p99_ms:.1f} ms"]
         for name, load in single.items()],
    )  # fmt: skip
    over_time = markdown_table(
        ["window", "req/s", "p50", "p99", "non-2xx + socket errors"],
        [[f"{i * WINDOW_S}-{(i + 1) * WINDOW_S} s", f"{w.requests_per_s:,.0f}",
          f"{w.p50_ms:.1f} ms", f"{w.p99_ms:.1f} ms", str(w.errors)]
         for i, w in enumerate(windows)],
    )  # fmt: skip
    rss = markdown_table(
        ["worker", "RSS at half time", "RSS at the end", "range from half time"],
        [[str(pid), f"{start:.0f} MiB", f"{end:.0f} MiB", f"{spread_:.1f}%"]
         for pid, (start, end, spread_) in sorted(memory.items())],
    )  # fmt: skip
    codes = {code: int(n) for code, n in sorted(codes.items())}
    server_errors = sum(n for code, n in codes.items() if code.startswith("5"))
    change = percent_change(single[KEYS_ON].requests_per_s, baseline)
    apart = percent_change(single[KEYS_OFF_AGAIN].requests_per_s, single[KEYS_OFF].requests_per_s)
    flat = memory and all(s <= RSS_FLAT_PERCENT for _, _, s in memory.values())
    verdicts = [
        f"API keys on: single-sample req/s {change} "
        f"against keys off, the mean of its two copies (budget: at most "
        f"{AUTH_BUDGET_PERCENT:g}% fewer: {'met' if cost <= AUTH_BUDGET_PERCENT else 'NOT met'}"
        f"); the two identical keys-off copies measured {apart} apart.",
        f"Soak: {sum(w.requests for w in windows):,} requests, {server_errors} answered 5xx "
        f"(the service's own count; its answers by status since it started: {codes}); worker "
        f"RSS flat within {RSS_FLAT_PERCENT:g}% after half time: {'yes' if flat else 'NO'}.",
        f"Schemathesis: exit {fuzzed[0]} ({'no failures' if fuzzed[0] == 0 else 'FAILURES'}); "
        f"{fuzzed[1]}.",
    ]
    return "\n\n".join([auth, over_time, rss, "\n".join(f"- {v}" for v in verdicts)])


if __name__ == "__main__":
    main()
