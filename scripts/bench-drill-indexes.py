#!/usr/bin/python3
"""Insert cost of the drill-down indexes (issue 21), SQLite only, as a micro-benchmark.

Usage: /usr/bin/python3 scripts/bench-drill-indexes.py [EVENTS]   (default 300,000)

Inserts EVENTS synthetic events into the admin schema's `events` table (versions 1 and 2, read
from admin/src/storage/sqlite/schema.rs) in transactions of 5,000, without and with the two
indexes of version 6, and each of them alone. Not the admin's ingest path (no decoding, no
enrichment): it compares index costs only. Writes to a temporary directory it deletes. Not run
in CI; results go into docs/benchmarks.md by hand.
"""
import os
import random
import sqlite3
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_RS = open(os.path.join(HERE, "..", "admin", "src", "storage", "sqlite", "schema.rs")).read()


def step(name):
    start = SCHEMA_RS.index('const %s: &str = r#"' % name) + len('const %s: &str = r#"' % name)
    return SCHEMA_RS[start:SCHEMA_RS.index('"#;', start)]


BASE = step("V1_EVENTS") + step("V2_ANALYTICS_USERS")
VARIANTS = {
    "version 2 indexes": "",
    "+ both drill indexes": step("V6_DRILL"),
    "+ events_source only": "CREATE INDEX events_source ON events(src_ip, time_ms);",
    "+ events_session only": "CREATE INDEX events_session ON events(sensor_id, session_id, seq);",
}


def rows(n):
    random.seed(1)
    out = []
    for i in range(n):
        k = random.random()
        kind = "connection" if k < 0.55 else "login" if k < 0.85 else "command"
        ip = "203.%d.%d.%d" % (random.randrange(256), random.randrange(256), random.randrange(1, 255))
        login = kind == "login"
        # Connection ids grow as a sensor assigns them (about three events per connection).
        out.append((1, i + 1, 1714521600000 + i * 50, "tcp", "ssh", kind, ip, 40000, 22, i // 3 + 1,
                    1, 1, 1, 1, 1, "root" if login else None, "x" if login else None, None, None, "{}"))
    return out


def run(extra, data, directory):
    path = os.path.join(directory, "bench.db")
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.executescript(BASE + extra)
    c.execute("INSERT INTO sensors(id, name) VALUES (1, 's')")
    c.commit()
    sql = ("INSERT INTO events(sensor_id, seq, time_ms, transport, protocol, kind, src_ip, src_port, dst_port,"
           " session_id, duration_ms, bytes_in, bytes_out, priority, count, username, password, payload_sha256,"
           " url, fields) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
    t = time.time()
    for b in range(0, len(data), 5000):
        c.executemany(sql, data[b:b + 5000])
        c.commit()
    dt = time.time() - t
    c.close()
    for f in ("bench.db", "bench.db-wal", "bench.db-shm"):
        p = os.path.join(directory, f)
        if os.path.exists(p):
            os.remove(p)
    return dt


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300000
    data = rows(n)
    with tempfile.TemporaryDirectory() as d:
        for name, extra in VARIANTS.items():
            dt = run(extra, data, d)
            print("%-24s %7.2f s  %9.0f events/s" % (name, dt, n / dt))


if __name__ == "__main__":
    main()
