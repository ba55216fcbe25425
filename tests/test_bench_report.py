"""The benchmark's arithmetic: what the throughput ratios of docs/performance.md are computed from."""

from scripts import bench_report


def _slice(ok: int, rps: float, errors: dict | None = None) -> dict:
    errors = errors or {}
    return {
        "ok": ok,
        "throughput_rps": rps,
        "errors": errors,
        "error_count": sum(errors.values()),
        "server_cores": 0.8,
        "client_cpu_s": 0.25,
        "db_cores": 0.5,
    }


def test_slices_of_one_operation_merge_into_requests_over_seconds_not_a_mean_of_rates():
    merged = bench_report.merged([_slice(100, 100.0), _slice(300, 150.0, {"HTTP 503": 2})])
    assert merged["ok"] == 400
    assert merged["throughput_rps"] == 133.3  # 400 requests in 1 s + 2 s; the mean of rates would say 125
    assert merged["errors"] == {"HTTP 503": 2} and merged["error_count"] == 2
    assert merged["slices_rps"] == [100.0, 150.0]
    assert merged["client_cpu_s"] == 0.5  # the load generator's CPU over both slices


def test_merging_sums_the_error_kinds_of_every_slice():
    merged = bench_report.merged([_slice(10, 10.0, {"timeout": 1}), _slice(10, 10.0, {"timeout": 2, "HTTP 500": 1})])
    assert merged["errors"] == {"timeout": 3, "HTTP 500": 1}
    assert merged["error_count"] == 4


def _load(rps: float, p99: float = 5.0, errors: int = 0) -> dict:
    latency = {"p50": 1.0, "p95": 2.0, "p99": p99, "max": p99, "mean": 1.0}
    return {
        **_slice(int(rps * 10), rps),
        "error_count": errors,
        "latency_ms": latency,
        "offered_rps": rps,
        "documents": 400,
    }


def _results(get_rps: float, paired_ceiling_rps: float) -> dict:
    config = {
        "nproc": 2,
        "cpu": "test",
        "python": "3.11",
        "gunicorn": "27",
        "worker_class": "gthread",
        "workers": 2,
        "threads": 8,
        "database": "nx-27017",
        "quick": True,
        "date": "2026-11-24",
        "commit": "abc1234",
        "load_before": (0.0, 0.0, 0.0),
        "concurrency": 32,
        "offered_rps": 1000.0,
    }
    ceiling = {"saturation": _load(1500.0), "paced": _load(1000.0), "half": _load(750.0)}
    get = {
        "saturation": _load(get_rps),
        "paced": _load(1000.0),
        "half": _load(get_rps / 2),
        "paired_ceiling_rps": paired_ceiling_rps,
        "ratio_to_ceiling": round(get_rps / paired_ceiling_rps, 3),
    }
    return {"config": config, "throughput": {"ceiling": ceiling, "get": get}}


def test_the_report_judges_a_ratio_by_the_paired_ceiling_and_shows_it():
    text = bench_report.report(_results(900.0, 1000.0))  # the first, larger ceiling run is not the yardstick
    assert "| get throughput / ceiling | 0.90 | ≥ 0.8 (project goal) | yes |" in text
    assert "| get | 900 | 0.90 (1,000) |" in text


def test_the_report_marks_a_ratio_below_its_goal_as_not_met():
    text = bench_report.report(_results(700.0, 1000.0))
    assert "| get throughput / ceiling | 0.70 | ≥ 0.8 (project goal) | **no** |" in text


def test_an_operation_is_flat_while_its_p50_stays_within_twice_the_smallest_sizes():
    assert bench_report.flat(2.0, 4.0)
    assert bench_report.flat(2.0, 1.5)
    assert not bench_report.flat(2.0, 4.1)


def _size(target: int, list_p50: float, get_p50: float) -> dict:
    def op(p50: float) -> dict:
        return {"latency_ms": {"p50": p50, "p95": 2 * p50, "p99": 3 * p50, "max": 4 * p50, "mean": p50}}

    ops = {"list": op(list_p50), "list_page2": op(list_p50), "get": op(get_p50), "update": op(1.0), "create": op(1.0)}
    return {"target": target, "sessions": target + 700, "documents": 2 * target, "load": (1.0, 1.0, 1.0), "ops": ops}


def test_the_list_goal_is_judged_at_50000_sessions_or_the_largest_size_below():
    sizes = [_size(10_000, 1.0, 2.0), _size(50_000, 31.0, 2.0), _size(150_000, 2.0, 2.0)]
    assert bench_report.list_goal_size(sizes)["target"] == 50_000
    assert bench_report.list_goal_size(sizes[:1])["target"] == 10_000
    assert bench_report.list_goal_size(sizes[2:]) is None
    text = bench_report.report({**_results(900.0, 1000.0), "scale": {"sizes": sizes}})
    assert (
        "| list p50 at 50,700 stored sessions | 31.0 ms | ≤ 30 ms at 50,000 stored sessions (project goal) | **no** |"
        in text
    )
    assert (
        "| get p50 at 150,700 vs 10,700 stored sessions | 2.0 → 2.0 ms (x1.0) | flat: within 2x (project goal) | yes |"
        in text
    )
    assert "| 50,700 | 100,000 | 31.0 / 62.0 | 31.0 | 2.0 | 1.0 | 1.0 | - | 1.0 |" in text


def test_a_request_slower_than_150_ms_during_the_purge_misses_the_housekeeping_goal():
    loop = {**_load(500.0, p99=20.0), "latency_ms": {"p50": 4.0, "p95": 9.0, "p99": 20.0, "max": 151.0, "mean": 5.0}}
    hk = {"expiring": 3000, "clients": 4, "seconds": 60.0, "during": loop, "baseline": _load(500.0, p99=12.0)}
    rows = bench_report.targets({**_results(900.0, 1000.0), "scale": {"sizes": [], "housekeeping": hk}})
    assert (
        "| slowest request while 3,000 expired sessions are purged (4 clients, 60 s) | 151 ms (p99 20.0 ms); "
        "nothing to purge: 12.0 ms | ≤ 150 ms behind housekeeping (project goal) | **no** |" in rows
    )
