"""Benchmark: what monitoring costs the deployed service. The same Bento served three ways,
side by side under the serving benchmark's wrk load: as deployed (reference counters on,
1% of answers logged: conf/deploy/default.yaml), with monitoring off, and with every
answer logged (payload_sample_rate=1, the payload log's worst case).

    python -m bench.monitoring        # writes the "Monitoring" section of docs/benchmarks.md

The variants are copies of the built Bento with their deployment.json changed, so the
model, code and every other setting are the same.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.loadgen import post_script, wrk_binary
from bench.report import REPORT, markdown_table, publish
from bench.serving import BATCH, CONNECTIONS, median_load, payload, spread
from bench.variants import built_bento, in_turns, percent_change, served_variants, variant

AS_DEPLOYED, OFF, ALL_LOGGED = (
    "as deployed (on, 1% logged)",
    "monitoring off",
    "on, every answer logged",
)
BUDGET_PERCENT = 5.0  # issue 28: single-sample req/s drops by at most this with monitoring on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args()
    wrk_binary()
    with built_bento() as (workdir, built):
        bentos = {
            AS_DEPLOYED: variant(built, workdir / "as-deployed"),
            OFF: variant(built, workdir / "off", monitoring=False, payload_sample_rate=0.0),
            ALL_LOGGED: variant(built, workdir / "all-logged", payload_sample_rate=1.0),
        }
        scripts = {
            "single": post_script(workdir / "single.lua", payload(1)),
            "batch": post_script(workdir / "batch.lua", payload(BATCH)),
        }
        with served_variants(bentos, workdir) as served:
            urls = {name: f"{url}/predict" for name, (url, _) in served.items()}
            runs = in_turns(urls, scripts, args.seconds, args.repeats)
    results = {name: {kind: median_load(x) for kind, x in kinds.items()}
               for name, kinds in runs.items()}  # fmt: skip
    rows = []
    for name in runs:
        single, batch = results[name]["single"], results[name]["batch"]
        change = [
            percent_change(results[name][kind].requests_per_s, results[OFF][kind].requests_per_s)
            for kind in ("single", "batch")
        ]
        rows.append([name, f"{single.requests_per_s:,.0f}", spread(runs[name]["single"]),
                     change[0], f"{single.p99_ms:.1f} ms", f"{batch.requests_per_s:,.0f}",
                     change[1], str(single.errors + batch.errors)])  # fmt: skip
    table = markdown_table(
        ["served", "1-sample req/s", "range of runs", "vs off", "p99", f"{BATCH}-sample req/s",
         "vs off", "errors"], rows,
    )  # fmt: skip
    single = {name: results[name]["single"].requests_per_s for name in (AS_DEPLOYED, OFF)}
    drop = 100 * (1 - single[AS_DEPLOYED] / single[OFF])
    met = "met" if drop <= BUDGET_PERCENT else "NOT met"
    verdict = (f"Monitoring as deployed: single-sample req/s "
               f"{percent_change(single[AS_DEPLOYED], single[OFF])} against monitoring off "
               f"(budget: at most {BUDGET_PERCENT:g}% fewer: {met}).")  # fmt: skip
    method = (
        f"wrk (1 thread, {CONNECTIONS} connections, {args.seconds} s per run, median of "
        f"{args.repeats} runs after a warm-up), the serving benchmark's bodies and CNN; one "
        "Bento copied three times with only deployment.json's monitoring settings changed, "
        "all three up at once and measured in turns (order rotated each round)."
    )
    publish("monitoring", method, f"{table}\n\n{verdict}", args.output)


if __name__ == "__main__":
    main()
