"""Reads the output of scripts/bench.sh on stdin and prints its figures as one table, beside
the goals of the speed issue. A figure a run did not measure is left blank."""

import re
import sys

log = sys.stdin.read().splitlines()
cells = {}  # (figure, backend) -> text


def put(figure, backend, value):
    cells[(figure, backend)] = value


backend = None
kind = None
bench = None
rss = {}
for line in log:
    section = re.match(r"== (sqlite|postgres): (.*)", line)
    if section:
        backend = section.group(1)
        if "pull_request deliveries" in section.group(2):
            kind = "webhook"
        elif "intents, first page" in section.group(2):
            kind = "api"
        peak = re.search(r"peak RSS: (\d+) kB", line)
        if peak:
            rss[backend] = max(rss.get(backend, 0), int(peak.group(1)))
        continue
    job = re.match(r"== queue job \((\d+) intents, (\d+) target\(s\), (sqlite|postgres)\): median ([\d.]+) s", line)
    if job:
        put(f"queue job: {job.group(1)} intents, {job.group(2)} target(s) → all MERGED",
            job.group(3), f"{job.group(4)} s")
        continue
    load = re.match(r"\s+(.+?): ([\d,]+) req/s, p50 (\S+), p99 (\S+), CPU per request ([\d.]+) ms server \+ ([\d.-]+) ms PostgreSQL, ([\d.-]+) µs per KB", line)
    if load and backend:
        label, rps, _, p99, server, pg, per_kb = load.groups()
        total = float(server) + max(float(pg), 0.0)
        if label == "GET /v1/intents":
            put("GET /v1/intents (first page, 30 KB): req/s", backend, rps)
            put("GET p99", backend, p99)
            put("GET CPU per KB served (server + PostgreSQL)", backend, f"{per_kb} µs")
        elif label.startswith("GET /v1/intents, If-None-Match"):
            put("GET with If-None-Match (304): req/s", backend, rps)
        elif label.startswith("POST webhook"):
            put("webhook (signed 25 KB): deliveries/s", backend, rps)
            put("webhook p99", backend, p99)
            put("webhook CPU per delivery (server + PostgreSQL)", backend, f"{total:.3f} ms")
        continue
    cold = re.match(r"(api|webhook|worker)\s+(\d+)\s+(\d+)\s+([\d.]+)$", line.strip())
    if cold:
        fn, zip_bytes, _, init_ms = cold.groups()
        put(f"Lambda {fn}: init", "function", f"{init_ms} ms")
        put(f"Lambda {fn}: zip", "function", f"{int(zip_bytes) / 1e6:.2f} MB")
        continue
    named = re.match(r"(queue_in_process_\w+)/workers/(\d+)", line)
    if named:
        bench = f"{named.group(1)}/{named.group(2)}"
    rate = re.search(r"thrpt:\s+\[\S+ \S+ (\S+) (\S+)", line)
    if rate and bench:
        put(f"queue engine {bench}", "postgres", f"{rate.group(1)} {rate.group(2)}")
        bench = None
for name, kb in rss.items():
    put("peak RSS under load", name, f"{kb / 1024:.1f} MiB")

goals = {
    "queue job: 50 intents, 1 target(s) → all MERGED": "≤ 2.18 s (5× the original's 10.9 s)",
    "GET /v1/intents (first page, 30 KB): req/s": "≥ 4,500",
    "GET p99": "≤ 20 ms",
    "GET CPU per KB served (server + PostgreSQL)": "≥ 50× less than the original",
    "webhook p99": "≤ 20 ms",
    "webhook CPU per delivery (server + PostgreSQL)": "≥ 100× less than the original",
    "peak RSS under load": "≤ 17 MiB",
    "queue engine queue_in_process_scm/4": "≥ 1,000 intents/s",
}
figures = []
for figure, _ in cells:
    if figure not in figures:
        figures.append(figure)
if not figures:
    sys.exit(0)
print()
print("| figure | SQLite | PostgreSQL | Lambda | goal |")
print("| --- | --- | --- | --- | --- |")
for figure in figures:
    row = [cells.get((figure, b), "") for b in ("sqlite", "postgres", "function")]
    goal = goals.get(figure, "")
    if figure.startswith("Lambda") and figure.endswith("init"):
        goal = "≤ 30 ms"
    elif figure.startswith("Lambda"):
        goal = "≤ 8 MB"
    print(f"| {figure} | {' | '.join(row)} | {goal} |")
