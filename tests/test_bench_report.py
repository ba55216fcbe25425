"""The benchmark's arithmetic: what the README's throughput ratios are computed from."""

from scripts import bench


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
    merged = bench._merged([_slice(100, 100.0), _slice(300, 150.0, {"HTTP 503": 2})])
    assert merged["ok"] == 400
    assert merged["throughput_rps"] == 133.3  # 400 requests in 1 s + 2 s; the mean of rates would say 125
    assert merged["errors"] == {"HTTP 503": 2} and merged["error_count"] == 2
    assert merged["slices_rps"] == [100.0, 150.0]
    assert merged["client_cpu_s"] == 0.5  # the load generator's CPU over both slices


def test_merging_sums_the_error_kinds_of_every_slice():
    merged = bench._merged([_slice(10, 10.0, {"timeout": 1}), _slice(10, 10.0, {"timeout": 2, "HTTP 500": 1})])
    assert merged["errors"] == {"timeout": 3, "HTTP 500": 1}
    assert merged["error_count"] == 4
