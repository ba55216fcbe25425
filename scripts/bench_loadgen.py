"""The benchmark's load generator: `python scripts/bench_loadgen.py < config.json` prints results as JSON.

scripts/bench.py runs it in its own process, so its CPU is not the servers'. An asyncio + aiohttp
client over loopback, closed loop (saturation: `connections` clients back to back) or open loop
(`rate` requests per second on a fixed schedule, latency counted from each request's due time, so a
slow server cannot hide its queue).
"""

from __future__ import annotations

import json
import resource
import sys
from typing import Any


def _pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[i]


def _summary(lat: list[float]) -> dict[str, float]:
    lat.sort()
    return {f"p{p}": round(_pct(lat, p) * 1000, 2) for p in (50, 95, 99)} | {
        "max": round((lat[-1] if lat else 0) * 1000, 2),
        "mean": round(sum(lat) / len(lat) * 1000, 2) if lat else 0.0,
    }


async def _loadgen(cfg: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    import aiohttp

    base = cfg["base"]
    items = [(base + path, body.encode(), b"%N%" in body.encode()) for path, body in cfg["items"]]
    check = cfg.get("check_error_code", True)
    headers = cfg.get("headers", {})
    mode = cfg["mode"]
    counter = 0
    lat: list[float] = []
    by_path: dict[str, list[float]] | None = {} if cfg.get("by_path") else None  # closed loop: latency per path
    errors: dict[str, int] = {}
    ok = 0
    loop = asyncio.get_running_loop()
    conns = cfg.get("connections", 32)
    connector = aiohttp.TCPConnector(limit=conns, limit_per_host=conns, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=cfg.get("request_timeout", 30))

    def next_item() -> tuple[str, bytes]:
        nonlocal counter
        url, body, templated = items[counter % len(items)]
        counter += 1
        return url, body.replace(b"%N%", str(counter).encode()) if templated else body

    def failed(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def one(session: aiohttp.ClientSession, url: str, body: bytes) -> bool:
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                data = await resp.read()
                if resp.status != 200:
                    failed(f"HTTP {resp.status}")
                    return False
                if check and b'"error_code":""' not in data:
                    code = json.loads(data).get("error_code", "?")
                    failed(code)
                    return False
                return True
        except TimeoutError:
            failed("timeout")
        except aiohttp.ClientError as exc:
            failed(type(exc).__name__)
        return False

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if mode == "closed":
            warm = cfg.get("warmup", 1.0)
            duration = cfg["duration"]
            limit = cfg.get("max_requests") or 10**12
            t0 = loop.time()
            measure_from, end = t0 + warm, t0 + warm + duration
            sent = 0

            async def worker() -> None:
                nonlocal ok, sent
                while loop.time() < end and sent < limit:
                    sent += 1
                    url, body = next_item()
                    start = loop.time()
                    good = await one(session, url, body)
                    done = loop.time()
                    if good and (start >= measure_from or limit < 10**12):
                        ok += 1
                        lat.append(done - start)
                        if by_path is not None:
                            by_path.setdefault(url[len(base) :], []).append(done - start)

            await asyncio.gather(*(worker() for _ in range(cfg.get("concurrency", conns))))
            elapsed = (loop.time() - measure_from) if limit >= 10**12 else (loop.time() - t0)
            if limit >= 10**12:
                elapsed = min(elapsed, duration + 5)
            throughput = ok / elapsed if elapsed > 0 else 0.0
            result = {"sent": sent, "elapsed_s": round(elapsed, 3)}
        else:  # open loop: request i is due at start + i / rate, whatever happened before
            rate, duration = cfg["rate"], cfg["duration"]
            cap = cfg.get("max_outstanding", 5000)
            total = int(rate * duration)
            outstanding = 0
            dropped = 0
            tasks: set[asyncio.Task] = set()
            # a short untimed warm-up opens the connections
            await asyncio.gather(*(one(session, *next_item()) for _ in range(min(conns, 16))))
            start = loop.time() + 0.05
            last_done = start

            async def paced(url: str, body: bytes, due: float) -> None:
                nonlocal ok, outstanding, last_done
                good = await one(session, url, body)
                now = loop.time()
                outstanding -= 1
                last_done = max(last_done, now)
                if good:
                    ok += 1
                    lat.append(now - due)

            i = 0
            while i < total:
                now = loop.time()
                due = start + i / rate
                if due > now:
                    await asyncio.sleep(due - now)
                    continue
                while i < total and start + i / rate <= now:
                    due = start + i / rate
                    i += 1
                    if outstanding >= cap:
                        dropped += 1
                        continue
                    outstanding += 1
                    task = asyncio.create_task(paced(*next_item(), due))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            sent_end = loop.time()
            if tasks:
                # Requests still unanswered `drain` seconds after the last one was due are errors. They
                # are cancelled only now: timing out single requests earlier would let the client open
                # new connections while the server still works through the old ones (an unbounded queue).
                _, pending = await asyncio.wait(set(tasks), timeout=cfg.get("drain", 10))
                for task in pending:
                    task.cancel()
                    failed("unfinished")
            if dropped:
                errors["dropped (backlog)"] = dropped
            elapsed = max(last_done, sent_end) - start
            throughput = ok / elapsed if elapsed > 0 else 0.0
            result = {
                "offered_rps": rate,
                "sent": total - dropped,
                "send_s": round(sent_end - start, 3),
                "elapsed_s": round(elapsed, 3),
            }
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    result.update(
        ok=ok,
        errors=errors,
        error_count=sum(errors.values()),
        throughput_rps=round(throughput, 1),
        latency_ms=_summary(lat),
        client_cpu_s=round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 2),
    )
    if by_path is not None:
        result["by_path"] = {path: {"ok": len(v), "latency_ms": _summary(v)} for path, v in by_path.items()}
    return result


def main() -> None:
    import asyncio

    cfg = json.loads(sys.stdin.read())
    result = asyncio.run(_loadgen(cfg))
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
