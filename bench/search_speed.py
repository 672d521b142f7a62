"""Search-as-you-type speed: ``db.search.search_customers`` over N customers.

Seeds ``--customers`` customers with ``db.demo.seed_bulk`` (furigana, one in seven a
company, every customer a mobile, every third a landline) into a fresh SQLite file in a
temporary directory, or, with ``--db URL`` (PostgreSQL), into a schema of its own that is
dropped afterwards. One in ten customers gets a code. Then runs a fixed set of queries a
person types (kana in hiragana, katakana and half-width, a company word, a code, parts of
a number in several spellings, a miss), each ``--repeat`` times round-robin, in one
session, as the API does (``limit`` 20), and a reference in the same run: the same
session reading one customer by primary key.

    python bench/search_speed.py                       # 100,000 customers, SQLite
    python bench/search_speed.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test

Writes ``bench/results/search_speed-<customers>-<backend>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pop_latency import RESULTS_DIR, describe_machine, machine_cpu_times, percentile
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from db.demo import seed_bulk
from db.engine import make_engine, make_session_factory, migrate
from db.models import Customer, CustomerPhone
from db.search import refresh_search, search_customers

LIMIT = 20
CODE_EVERY = 10  # one customer in ten has a code, K<id>


@contextlib.contextmanager
def database(db: str, workdir: Path) -> Iterator[tuple[Engine, str]]:
    """A migrated, empty database: a SQLite file in ``workdir``, or a new PostgreSQL schema."""
    if db == "sqlite":
        engine = make_engine(f"sqlite:///{workdir / 'callpop.db'}")
        try:
            migrate(engine)
            yield engine, "sqlite"
        finally:
            engine.dispose()
        return
    schema = f"callpop_bench_{uuid.uuid4().hex[:12]}"
    admin = make_engine(db)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = (
            make_url(db)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
        engine = make_engine(url)
        try:
            migrate(engine)
            yield engine, make_url(db).get_backend_name()
        finally:
            engine.dispose()
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def seed(engine: Engine, customers: int) -> float:
    started = time.perf_counter()
    with make_session_factory(engine)() as session:
        seed_bulk(session, customers, seed=1)  # fills the search columns too
        connection = session.connection()
        coded = connection.execute(
            text(
                "UPDATE customers SET code = 'K' || CAST(id AS TEXT), search_text = NULL"
                f" WHERE id % {CODE_EVERY} = 0"
            )
        ).rowcount
        refresh_search(connection)
        session.commit()
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    print(f"seeded {customers:,} customers ({coded:,} with a code) in ", end="")
    return time.perf_counter() - started


def queries(session: Session) -> list[tuple[str, str]]:
    """(what, query): what a person types, with numbers and a code that exist."""
    mobile = session.scalar(
        select(CustomerPhone.e164)
        .where(CustomerPhone.e164.like("+8190%"))
        .order_by(CustomerPhone.id.desc())
    )
    code = session.scalar(select(Customer.code).where(Customer.code.is_not(None)).limit(1))
    assert mobile is not None and code is not None, "the seeded database has no mobile or code"
    national = "0" + mobile[3:]  # 09012345678
    full_width = national.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    return [
        ("surname, hiragana", "やまだ"),
        ("surname, katakana", "ヤマダ"),
        ("surname, half-width katakana", "ﾔﾏﾀﾞ"),
        ("surname and given name", "やまだ けん"),
        ("one kana", "さ"),
        ("kanji surname", "山田"),
        ("company word", "青葉"),
        ("code", code),
        ("number, last 8 with hyphen", f"{national[3:7]}-{national[7:]}"),
        ("number, all digits", national),
        ("number, first part with hyphen", f"{national[:3]}-{national[3:7]}"),
        ("number, +81 with spaces", f"+81 {national[1:3]} {national[3:7]}"),
        ("number, full-width digits", full_width),
        ("a miss", "ぬぬぬ"),
        ("empty (most recently updated)", ""),
    ]


def measure(engine: Engine, repeat: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    factory = make_session_factory(engine)
    with factory() as session:
        asked = queries(session)
        pk_ids = list(session.scalars(select(Customer.id).order_by(Customer.id).limit(1000)))
        for _what, query in asked:  # warm the cache: the first scan reads from disk
            search_customers(session, query, limit=LIMIT)
        times: dict[str, list[float]] = {query: [] for _what, query in asked}
        reference: list[float] = []
        found: dict[str, tuple[int, bool]] = {}
        for i in range(repeat):
            started = time.perf_counter()
            session.execute(select(Customer).where(Customer.id == pk_ids[i % len(pk_ids)])).one()
            reference.append((time.perf_counter() - started) * 1000)
            session.expunge_all()
            for _what, query in asked:
                started = time.perf_counter()
                hits, truncated = search_customers(session, query, limit=LIMIT)
                times[query].append((time.perf_counter() - started) * 1000)
                found[query] = (len(hits), truncated)
    ref = _summary(reference)
    rows = []
    for what, query in asked:
        summary = _summary(times[query])
        count, truncated = found[query]
        rows.append(
            {
                "what": what,
                "query": query,
                "matches": f"{count}{'+' if truncated else ''}",
                **summary,
                "p50_ratio": round(summary["p50_ms"] / ref["p50_ms"], 1),
            }
        )
    return rows, ref


def _summary(values_ms: list[float]) -> dict[str, float]:
    values = sorted(values_ms)
    return {
        "p50_ms": round(percentile(values, 50) or 0.0, 2),
        "p95_ms": round(percentile(values, 95) or 0.0, 2),
        "max_ms": round(values[-1], 2),
    }


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    ref = result["reference"]
    lines = [
        f"# Search speed: {result['customers']:,} customers, {result['backend']}",
        "",
        f"Each query {result['repeat']} times (round-robin), limit {LIMIT}, one session;"
        f" matches = hits returned (`+`: more matched, `truncated`).",
        "",
        "| what | query | matches | p50 ms | p95 ms | max ms | p50 ÷ reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["queries"]:
        lines.append(
            f"| {row['what']} | `{row['query']}` | {row['matches']} | {row['p50_ms']}"
            f" | {row['p95_ms']} | {row['max_ms']} | {row['p50_ratio']}× |"
        )
    lines += [
        f"| **reference**: one customer by primary key | | 1 | {ref['p50_ms']}"
        f" | {ref['p95_ms']} | {ref['max_ms']} | 1× |",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; {m['os']};"
        f" Python {m['python']}; SQLite {m['sqlite']}; database {result['backend']}"
        f" {result['server_version']}; load average at start"
        f" {' '.join(m['loadavg_at_start'] or [])}; whole machine CPU busy during the"
        f" measurement {result['machine_busy_percent']} % (all cores); {m['date']}.",
        "",
        f"Seeding took {result['seed_seconds']:.0f} s (not measured above).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--db", default="sqlite", help="sqlite (a temporary file) or a URL")
    parser.add_argument("--repeat", type=int, default=50)
    options = parser.parse_args()
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="callpop-search-") as tmp:
        with database(options.db, Path(tmp)) as (engine, backend):
            seconds = seed(engine, options.customers)
            print(f"{seconds:.0f} s")
            with engine.connect() as connection:
                version = (
                    connection.execute(text("SELECT sqlite_version()")).scalar()
                    if backend == "sqlite"
                    else connection.execute(text("SHOW server_version")).scalar()
                )
            busy_before, total_before = machine_cpu_times()
            rows, reference = measure(engine, options.repeat)
            busy_after, total_after = machine_cpu_times()
    # Other work on the machine shows up in the tail: say how busy it was meanwhile.
    machine_busy = round(100 * (busy_after - busy_before) / max(1, total_after - total_before), 1)
    result = {
        "customers": options.customers,
        "backend": backend,
        "server_version": str(version).split()[0],
        "repeat": options.repeat,
        "limit": LIMIT,
        "seed_seconds": round(seconds, 1),
        "reference": reference,
        "queries": rows,
        "machine": machine,
        "machine_busy_percent": machine_busy,
    }
    print(f"{'what':<32} {'query':<16} {'matches':>7} {'p50':>7} {'p95':>7} {'max':>7} ratio")
    for row in rows:
        print(
            f"{row['what']:<32} {row['query']:<16} {row['matches']:>7} {row['p50_ms']:>7}"
            f" {row['p95_ms']:>7} {row['max_ms']:>7} {row['p50_ratio']}×"
        )
    print(
        f"{'reference: primary key':<32} {'':<16} {1:>7} {reference['p50_ms']:>7}"
        f" {reference['p95_ms']:>7} {reference['max_ms']:>7} 1×"
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = RESULTS_DIR / f"search_speed-{options.customers}-{backend}"
    stem.with_suffix(".json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    stem.with_suffix(".md").write_text(render(result))
    print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
