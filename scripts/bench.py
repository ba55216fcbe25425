"""The performance benchmark: `make bench` (full, several minutes) or `BENCH_QUICK=1 make bench` (~1 min).

Starts the service as in production (`gunicorn -c gunicorn.conf.py app.wsgi:application`,
APP_ENV=production, a SERVICE_TOKEN, MONGODB_URI pointing at an nx-27017 started here on a file in a
temporary directory) next to the ceiling (scripts/bench_ceiling.py under the same gunicorn settings),
and drives both over loopback from a separate process (scripts/bench_loadgen.py: an asyncio +
aiohttp client, closed loop for saturation, open loop at a fixed offered rate). The goals, the
arithmetic and the Markdown tables are scripts/bench_report.py. This file is the entry point; the
phases are scripts/bench_phases.py, on the rig of scripts/bench_rig.py (its processes:
scripts/bench_servers.py); the round-trip count is scripts/bench_round_trips.py.

Measured: throughput at saturation and its ratio to the ceiling (slices of each operation alternate
with slices of the ceiling: the shared machine's speed drifts by a quarter over minutes); p50/p95/p99 at a fixed offered
1000 req/s (and at half the saturation rate, a load the service can sustain); database round trips
per operation (pymongo command monitoring, in-process through the Flask test client); latency against
history length and context size; worker RSS before and after a mixed run; and, last, how the embedded
default behaves as sessions accumulate (scripts/bench_scale.py: serial list / get / update / create at
10,000, 50,000 and 150,000 stored sessions, and requests during the purge of expired ones). Prints
Markdown tables and writes bench-results/bench-<time>.json.

Environment: BENCH_QUICK=1 (short phases), BENCH_CONCURRENCY (saturation connections, default 32),
BENCH_RATE (offered rate, default 1000), BENCH_MIXED_SECONDS (override the mixed run's length),
BENCH_ONLY (comma list of operations for the throughput phases), BENCH_PHASES (comma list of
round_trips, throughput, growth, memory, scale; default all), BENCH_SCALE_SIZES (comma list of stored
sessions the scale phase measures at; default 10000,50000,150000, quick 2000,10000), BENCH_PYSPY (path of py-spy: record
the workers during each saturation phase, collapsed stacks saved next to the JSON). WEB_CONCURRENCY,
GUNICORN_THREADS etc. reach gunicorn.conf.py unchanged.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench_phases import Bench  # noqa: E402
from scripts.bench_report import report  # noqa: E402
from scripts.bench_servers import tempdir  # noqa: E402

PHASES = ("round_trips", "throughput", "growth", "memory", "scale")  # scale last: it fills the database


def main() -> int:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    phases = set((os.environ.get("BENCH_PHASES") or ",".join(PHASES)).split(","))
    if phases - set(PHASES):
        sys.exit(f"BENCH_PHASES: unknown {', '.join(sorted(phases - set(PHASES)))}; known: {', '.join(PHASES)}")
    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    with tempdir() as tmp:
        bench = Bench(quick, tmp, out_dir)
        try:
            bench.start()
            if "round_trips" in phases:
                bench.round_trips()
            if {"throughput", "memory"} & phases:
                bench.setup_sessions()
            for phase in ("throughput", "growth", "memory", "scale"):
                if phase in phases:
                    getattr(bench, phase)()
        except BaseException:
            for log in ("service.log", "ceiling.log"):
                path = tmp / log
                if path.exists():
                    print(f"--- {log} (tail)\n" + path.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            bench.stop()
        results = bench.results
        results["config"]["load_after"] = os.getloadavg()
        results["config"]["seconds"] = round(time.monotonic() - started, 1)
        path = out_dir / f"bench-{bench.stamp}{'-quick' if quick else ''}.json"
        path.write_text(json.dumps(results, indent=2))
    print(report(results))
    print(f"\nResults: {path.relative_to(ROOT)} ({results['config']['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
