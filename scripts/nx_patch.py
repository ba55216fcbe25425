"""Start-up patches that let the embedded nx-27017 (neosqlite) use its SQLite indexes. Development tooling.

scripts/nx_server.py calls ``apply()`` after its ``throttle()`` and before ``nx_27017.main()``. Every
patch verifies, against the installed neosqlite, that the code and the SQL it targets still look as
expected; if not, that patch is skipped and stock behaviour stays (correct, only slower).
``apply()`` returns the names of the patches it installed.

1. ``eq-index-guard``: neosqlite turns a plain equality ``{f: v}`` into
       (json_extract(data,'$.f') = ? OR EXISTS (SELECT 1 FROM json_each(CASE WHEN
        json_type(data,'$.f') = 'array' THEN json_extract(data,'$.f') END) WHERE value = ?))
   The EXISTS arm cannot use an index, so SQLite scans the whole table even though the
   expression json_extract(data,'$.f') leads an index. The patch inserts, inside the array arm,
   a range test on the same expression that every array value satisfies (json_extract returns an
   array as JSON text, which starts with '['; jsonb_extract returns it as a BLOB, and blobs sort
   after every text/number):
       (E = ? OR (E >= '[' AND E < '\\' AND EXISTS (...)))      -- json mode
       (E = ? OR (E >= x'' AND EXISTS (...)))                  -- jsonb mode
   The added test is implied by the EXISTS arm, so the predicate is logically identical (same
   rows, same parameters); but now both OR arms are index ranges and SQLite answers the filter
   with a MULTI-INDEX OR over any index whose first column is E (e.g. idx_<c>_uid_slot).
   Applied to the SQL of both neosqlite query builders (find/find_one/count and
   update/delete/find_one_and_*), for top-level field names only.

2. ``fallback-prefilter``: a filter with a top-level ``$or`` (the list's paging condition) is
   not translated to SQL at all: neosqlite reads, sorts and decodes the WHOLE table and filters
   in Python. The patch adds the filter's top-level plain string equalities (``uid``, ``k``, ``st``
   ...) as an SQL WHERE (the same translation neosqlite uses when there is no $or, index-guarded
   by patch 1) and still evaluates the complete filter in Python on what that returns. The SQL
   part is necessary for a match, so results (and their order) are unchanged.

3. ``ttl-index`` + ``ttl-batched``: the TTL purge runs
       DELETE FROM c WHERE datetime(COALESCE(json_extract(data,'$.pa."$date"'),
                                             json_extract(data,'$.pa'))) < datetime(?)
   a full scan. The patch takes that exact expression from neosqlite's own translator, creates an
   index on it (named ``nxp_<collection>_<field>_ttl``: outside neosqlite's ``idx_`` namespace, so
   listIndexes is unchanged) and deletes the same rows in index-driven batches of ``BATCH`` rows
   with a ``BUDGET_S`` time budget per purge, so one purge never holds the server for long. When
   the budget runs out the rest is purged by further passes at most every ``BACKLOG_RETRY_S``
   (these bypass the launcher's 30 s throttle only while such a backlog exists).
   The numeric-epoch half of the stock purge already uses idx_<c>_<field> and is left as is.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger("nx_patch")

BATCH = 100  # rows per DELETE statement of the TTL purge (~5-25 ms each at 300k scattered documents)
BUDGET_S = 0.04  # time one purge call may spend deleting before it leaves the rest for later
BACKLOG_RETRY_S = 1.0  # after a purge stopped on its budget, the next one may run this soon
TESTED = {"neosqlite": ("1.17.2",), "nx-27017": ("0.8.1",)}

_applied: list[str] = []
_lock = threading.Lock()

# --- 1. index-usable equality ------------------------------------------------------------------

_CONTAINMENT = re.compile(
    r"\((?P<e>(?P<fn>jsonb?_extract)\(data, '\$\.(?P<f>\w+)'\)) = \? OR "
    r"(?P<ex>EXISTS \(SELECT 1 FROM jsonb?_each\(CASE WHEN json_type\(data, '\$\.(?P=f)'\) = 'array' "
    r"THEN json_extract\(data, '\$\.(?P=f)'\) END\) WHERE value = \?\))\)"
)


def _guard_one(m: re.Match) -> str:
    e = m["e"]
    guard = f"{e} >= x''" if m["fn"] == "jsonb_extract" else f"{e} >= '[' AND {e} < '\\'"
    return f"({e} = ? OR ({guard} AND {m['ex']}))"


def guard_sql(sql: Any) -> Any:
    """Rewrite every plain-equality containment clause of a WHERE text; anything else unchanged."""
    if not isinstance(sql, str) or "EXISTS (SELECT 1 FROM" not in sql:
        return sql
    return _CONTAINMENT.sub(_guard_one, sql)


def _patch_eq_guard() -> bool:
    from neosqlite.collection.query_helper import QueryHelper
    from neosqlite.collection.sql_translator_unified import SQLClauseBuilder, SQLTranslator

    orig_containment = QueryHelper._build_containment_clause
    orig_where = SQLClauseBuilder.build_where_clause

    # Self-check on what this neosqlite emits: both builders must produce the expected text.
    for jsonb, each in ((False, "json_each"), (True, "jsonb_each")):
        where, params = SQLTranslator("t", "data", "id", jsonb, each).translate_match({"uid": "x"})
        if not where or guard_sql(where) == where or len(params) != 2:
            log.warning("nx_patch: unexpected equality SQL %r; eq-index-guard not applied", where)
            return False

    def _build_containment_clause(self, field, extract_expr, value):
        clause, params = orig_containment(self, field, extract_expr, value)
        return guard_sql(clause), params

    def build_where_clause(self, *args, **kwargs):
        sql, params = orig_where(self, *args, **kwargs)
        return guard_sql(sql), params

    QueryHelper._build_containment_clause = _build_containment_clause
    SQLClauseBuilder.build_where_clause = build_where_clause

    class _Probe:  # the query-helper builder, probed without a database
        jsonb = type("J", (), {"json_each_function": "json_each"})()

    probe = _build_containment_clause(_Probe(), "uid", "json_extract(data, '$.uid')", "x")[0]
    if "'['" not in probe:
        QueryHelper._build_containment_clause = orig_containment
        SQLClauseBuilder.build_where_clause = orig_where
        log.warning("nx_patch: unexpected containment SQL %r; eq-index-guard not applied", probe)
        return False
    return True


# --- 2. $or queries: SQL pre-filter on the top-level string equalities -------------------------


def _patch_fallback_prefilter() -> bool:
    from neosqlite.collection.cursor import Cursor
    from neosqlite.collection.jsonb_support import json_data_column
    from neosqlite.sql_utils import quote_table_name

    orig = Cursor._handle_python_fallback
    if not callable(orig) or not hasattr(Cursor, "_load_documents"):
        return False

    def _prefilter(self):
        """(SELECT, params, filter) for the SQL-narrowed scan, or None for the stock one."""
        flt = self._filter
        if not isinstance(flt, dict) or self._min or self._max:
            return None
        pre = {
            k: v
            for k, v in flt.items()
            if isinstance(k, str) and k[:1] != "$" and k != "_id" and "." not in k and type(v) is str
        }
        if not pre:
            return None
        built = self._query_helpers._build_simple_where_clause(pre)
        if not built or built[2] or not built[0].startswith("WHERE "):
            return None
        where, params, _tables = built
        sort_clause = self._query_helpers._build_sort_clause(self._sort, self._collation)
        jsonb = self._collection.query_engine.jsonb.jsonb_supported
        cmd = (
            f"SELECT id, _id, {json_data_column(jsonb)} as data "
            f"FROM {quote_table_name(self._collection.name)} {where}{sort_clause}"
        )
        return cmd, params, flt, bool(sort_clause)

    def _handle_python_fallback(self):
        try:
            plan = _prefilter(self)
        except Exception as exc:  # noqa: BLE001 - any surprise: stock behaviour
            log.debug("nx_patch: prefilter skipped: %s", exc)
            plan = None
        if plan is None:
            yield from orig(self)
            return
        cmd, params, flt, sorted_in_sql = plan
        if sorted_in_sql:  # as stock does (set only once iteration starts, like stock)
            self._sql_handled_sort = True
        db_cursor = self._collection.db.execute(cmd, params)
        apply = self._query_helpers._apply_query
        try:
            while True:
                rows = db_cursor.fetchmany(self._batch_size)
                if not rows:
                    break
                for doc in self._load_documents(rows):
                    if apply(flt, doc):
                        yield doc
        finally:
            db_cursor.close()

    Cursor._handle_python_fallback = _handle_python_fallback
    return True


# --- 3. TTL purge on an index, in bounded batches ----------------------------------------------

_TTL_WHERE = re.compile(
    r"^WHERE (?P<expr>datetime\(COALESCE\(jsonb?_extract\(data, '[^']*'\), jsonb?_extract\(data, '[^']*'\)\)\))"
    r" < datetime\(\?\)$"
)
_ttl_ready: dict[tuple[int, str, str], str | None] = {}  # (db, table, expr) -> index name or None
_backlog: dict[tuple[int, str], float] = {}  # collections whose last purge hit the budget -> when


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ttl_index(coll, field: str, expr: str) -> str | None:
    """Create (once) the index on neosqlite's own TTL expression; None if that is impossible."""
    key = (id(coll.database), coll.name, expr)
    name = re.sub(r"\W", "_", f"nxp_{coll.name}_{field}_ttl")
    if key in _ttl_ready:
        if _ttl_ready[key]:  # cheap no-op unless the table was dropped and re-created
            coll.db.execute(f"CREATE INDEX IF NOT EXISTS {_qi(name)} ON {_qi(coll.name)}({expr})")
        return _ttl_ready[key]
    try:
        coll.db.execute(f"CREATE INDEX IF NOT EXISTS {_qi(name)} ON {_qi(coll.name)}({expr})")
        plan = " ".join(
            str(r[-1])
            for r in coll.db.execute(
                f"EXPLAIN QUERY PLAN SELECT id FROM {_qi(coll.name)} WHERE {expr} < datetime(?)",
                ("2000-01-01T00:00:00+00:00",),
            )
        )
        result = name if name in plan else None
    except Exception as exc:  # noqa: BLE001 - e.g. a stored 'now' (non-deterministic datetime)
        log.warning("nx_patch: TTL index on %s.%s not usable: %s", coll.name, field, exc)
        result = None
    _ttl_ready[key] = result
    return result


def _patch_ttl() -> bool:
    from neosqlite.collection import Collection

    orig_auto = Collection._auto_purge_ttl
    if not all(hasattr(Collection, n) for n in ("purge_expired", "_ttl_specs_cached", "delete_many", "database")):
        return False

    def purge_expired(self, now: datetime | None = None) -> int:
        specs = self._ttl_specs_cached()
        if not specs:
            return 0
        if now is None:
            ref = datetime.now(UTC)
        elif now.tzinfo is None:
            ref = now.replace(tzinfo=UTC)
        else:
            ref = now
        total = 0
        started = time.monotonic()
        over_budget = False
        for spec in specs:
            field = spec["field"]
            cutoff = ref - timedelta(seconds=int(spec["expireAfterSeconds"]))
            batched = False
            try:
                where, params = self.query_engine.sql_translator.translate_match({field: {"$lt": cutoff}})
                m = _TTL_WHERE.match(where or "")
                if m and len(params) == 1 and _ttl_index(self, field, m["expr"]):
                    sql = (
                        f"DELETE FROM {_qi(self.name)} WHERE id IN (SELECT id FROM {_qi(self.name)} "
                        f"WHERE {m['expr']} < datetime(?) LIMIT {int(BATCH)})"
                    )
                    batched = True
                    while True:
                        n = self.db.execute(sql, params).rowcount
                        total += max(n, 0)
                        if n < BATCH:
                            break
                        if time.monotonic() - started > BUDGET_S:
                            over_budget = True
                            break
            except Exception as exc:  # noqa: BLE001 - same policy as stock: skip, log
                log.debug("TTL datetime purge skipped: %s", exc)
            if not batched:  # stock statement (full scan) for this spec
                try:
                    total += self.delete_many({field: {"$lt": cutoff}}).deleted_count
                except Exception as exc:  # noqa: BLE001
                    log.debug("TTL datetime purge skipped: %s", exc)
            try:  # numeric epoch values: already served by the field's own index
                total += self.delete_many({field: {"$lt": cutoff.timestamp()}}).deleted_count
            except Exception as exc:  # noqa: BLE001
                log.debug("TTL epoch purge skipped: %s", exc)
        key = (id(self.database), self.name)
        with _lock:
            if over_budget:
                _backlog[key] = time.monotonic()
            else:
                _backlog.pop(key, None)
        return total

    def _auto_purge_ttl(self) -> None:
        key = (id(self.database), self.name)
        with _lock:
            since = _backlog.get(key)
            due = since is not None and time.monotonic() - since >= BACKLOG_RETRY_S
            if due:
                _backlog[key] = time.monotonic()  # one caller at a time
        if due:
            try:
                self.purge_expired()
            except Exception as exc:  # noqa: BLE001
                log.debug("TTL auto-purge skipped: %s", exc)
            return
        orig_auto(self)  # stock, or the launcher's throttled purge when apply() runs after throttle()

    Collection.purge_expired = purge_expired
    Collection._auto_purge_ttl = _auto_purge_ttl
    return True


# --- entry point -------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in TESTED:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "?"
    return out


def apply() -> list[str]:
    """Install the patches (idempotent); returns the names of those in force."""
    with _lock:
        if _applied:
            return list(_applied)
    vers = _versions()
    untested = {d: v for d, v in vers.items() if v not in TESTED[d]}
    if untested:
        log.warning("nx_patch: tested with %s, found %s; each patch re-checks itself", TESTED, vers)
    for name, fn in (
        ("eq-index-guard", _patch_eq_guard),
        ("fallback-prefilter", _patch_fallback_prefilter),
        ("ttl-index+ttl-batched", _patch_ttl),
    ):
        try:
            ok = fn()
        except Exception as exc:  # noqa: BLE001 - internals changed: keep stock behaviour
            log.warning("nx_patch: %s not applied: %s", name, exc)
            ok = False
        if ok:
            _applied.append(name)
    return list(_applied)
