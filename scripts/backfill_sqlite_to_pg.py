#!/usr/bin/env python3
"""Copy Converge state between a SQLite file and PostgreSQL (the runbook's backfill command).

A thin wrapper around `converge backfill`; the binary is $CONVERGE_BIN, else `converge` on PATH.

    # SQLite -> PostgreSQL
    python scripts/backfill_sqlite_to_pg.py --source /data/state.db --target "$CONVERGE_PG_DSN"
    python scripts/backfill_sqlite_to_pg.py --sqlite-path /data/state.db --pg-dsn "$CONVERGE_PG_DSN"
    # PostgreSQL -> SQLite
    python scripts/backfill_sqlite_to_pg.py --reverse --source "$CONVERGE_PG_DSN" --target /data/state.db

--dry-run counts rows only; --verify compares row counts and content checksums per table and
exits non-zero on a mismatch. Reruns copy nothing twice.
"""

import argparse
import os
import shutil
import sys


def sqlite_url(path):
    return path if path.startswith("sqlite://") else "sqlite://" + path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reverse", action="store_true", help="copy PostgreSQL -> SQLite")
    parser.add_argument("--source", help="SQLite path (or PostgreSQL DSN with --reverse)")
    parser.add_argument("--target", help="PostgreSQL DSN (or SQLite path with --reverse)")
    parser.add_argument("--sqlite-path", help="the SQLite file (alternative to --source/--target)")
    parser.add_argument("--pg-dsn", help="the PostgreSQL DSN (alternative to --source/--target)")
    parser.add_argument("--dry-run", action="store_true", help="count rows only")
    parser.add_argument("--verify", action="store_true", help="compare counts and checksums after copying")
    args = parser.parse_args()

    if args.reverse:
        pg = args.source or args.pg_dsn
        sqlite = args.target or args.sqlite_path
    else:
        sqlite = args.source or args.sqlite_path
        pg = args.target or args.pg_dsn
    if not sqlite or not pg:
        parser.error("give the SQLite file and the PostgreSQL DSN (--source/--target or --sqlite-path/--pg-dsn)")
    if not pg.startswith(("postgres://", "postgresql://")):
        parser.error("the PostgreSQL side must be a postgres:// DSN")

    # The DSN reaches converge through the environment, not its command line (ps would show it).
    env = dict(os.environ, CONVERGE_BACKFILL_PG_DSN=pg)
    pg_ref = "env:CONVERGE_BACKFILL_PG_DSN"
    source, target = (pg_ref, sqlite_url(sqlite)) if args.reverse else (sqlite_url(sqlite), pg_ref)
    binary = os.environ.get("CONVERGE_BIN") or shutil.which("converge")
    if not binary:
        sys.exit("error: the converge binary was not found (set CONVERGE_BIN or put converge on PATH)")
    command = [binary, "--json", "backfill", "--from", source, "--to", target]
    if args.dry_run:
        command.append("--dry-run")
    if args.verify:
        command.append("--verify")
    os.execve(binary, command, env)


if __name__ == "__main__":
    main()
