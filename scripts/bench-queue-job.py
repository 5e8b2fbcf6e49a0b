#!/usr/bin/env python3
"""The queue job end to end (called by scripts/bench.sh queue-job).

A release `converge serve` on its embedded default (SQLite, or PostgreSQL with --postgres) with
a local repository and the worker's default settings (auto-confirm on, as the original's
queue does): N intents are created over HTTP, CI reports each head's check green, and the
clock runs from the first create to the moment every intent reads MERGED. Each branch adds its
own file, so every merge is clean and each intent is revalidated against the moved target.

    bench-queue-job.py BINARY --intents 50 --targets 1 [--rounds 3] [--postgres URL --psql PATH] [--env K=V]

Prints one line per round and the median, in seconds and intents merged per second.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

KEY = "bench-key"


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repository(path, intents, targets):
    """A repository with `targets` target branches and one branch per intent, each adding its
    own file; the work tree is detached so every target can move."""
    os.makedirs(path)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "bench@localhost")
    git(path, "config", "user.name", "bench")
    with open(os.path.join(path, "README.md"), "w") as f:
        f.write("bench\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "start")
    names = ["main"] + [f"release-{t}" for t in range(1, targets)]
    for name in names[1:]:
        git(path, "branch", name, "main")
    work = []
    for n in range(intents):
        target = names[n % targets]
        branch = f"feature/{n}"
        git(path, "checkout", "-q", "-b", branch, target)
        with open(os.path.join(path, f"change-{n}.txt"), "w") as f:
            f.write(f"change {n}\n")
        git(path, "add", ".")
        git(path, "commit", "-q", "-m", f"change {n}")
        work.append((f"job-{n}", branch, target, git(path, "rev-parse", "HEAD")))
    git(path, "checkout", "-q", "--detach", "main")
    return work


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"x-api-key": KEY, "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def round_once(binary, args, extra_env):
    with tempfile.TemporaryDirectory() as tmp:
        repo = os.path.join(tmp, "repo")
        work = make_repository(repo, args.intents, args.targets)
        env = dict(os.environ)
        env.update({
            "CONVERGE_REPO_PATH": repo,
            "CONVERGE_API_KEYS": f"{KEY}:admin:bench",
            "CONVERGE_RATE_LIMIT_ENABLED": "0",
            "CONVERGE_WORKER_AUTO_CONFIRM": "1",
            "CONVERGE_LOG": "warn",
        })
        if args.postgres:
            # A database of its own per round: the list of MERGED intents is this round's.
            database = f"bench_{os.urandom(4).hex()}"
            subprocess.run([args.psql, args.postgres, "-qc", f"CREATE DATABASE {database}"],
                           check=True)
            dsn = args.postgres.rsplit("/", 1)[0] + "/" + database
            env.update({"CONVERGE_DB_BACKEND": "postgres", "CONVERGE_PG_DSN": dsn})
        else:
            env.update({"CONVERGE_DB_BACKEND": "sqlite",
                        "CONVERGE_DB_PATH": os.path.join(tmp, "state.db")})
        env.update(extra_env)
        port = free_port()
        base = f"http://127.0.0.1:{port}/v1"
        server = subprocess.Popen([binary, "serve", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1)
                    break
                except OSError:
                    if server.poll() is not None:
                        sys.exit("converge serve exited")
                    time.sleep(0.005)
            run = os.urandom(4).hex()
            start = time.perf_counter()
            for intent, branch, target, _ in work:
                call(base, "POST", "/intents", {"id": f"{intent}-{run}", "source": branch,
                                                "target": target, "risk_level": "low"})
            for intent, _, _, head in work:
                call(base, "POST", f"/intents/{intent}-{run}/checks",
                     {"name": "lint", "state": "passed", "head_sha": head})
            print(f"   posted in {time.perf_counter() - start:.2f} s", flush=True)
            pending = {f"{intent}-{run}" for intent, _, _, _ in work}
            deadline = start + args.patience
            while pending:
                page = call(base, "GET", "/intents?status=MERGED&limit=500")
                pending -= {i["id"] for i in page["intents"]}
                if time.perf_counter() > deadline:
                    sys.exit(f"{len(pending)} intents not merged after {args.patience} s")
                if pending:
                    time.sleep(0.01)
            elapsed = time.perf_counter() - start
            merges = git(repo, "rev-list", "--count", "--merges", *[
                "main"] + [f"release-{t}" for t in range(1, args.targets)])
            if int(merges) != args.intents:
                sys.exit(f"expected {args.intents} merge commits on the targets, found {merges}")
            return elapsed
        finally:
            server.terminate()
            server.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--intents", type=int, default=50)
    parser.add_argument("--targets", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patience", type=float, default=600)
    parser.add_argument("--postgres", help="a superuser URL; each round creates a database")
    parser.add_argument("--psql", default="psql")
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()
    extra_env = dict(pair.split("=", 1) for pair in args.env)
    label = (f"{args.intents} intents, {args.targets} target(s), "
             f"{'postgres' if args.postgres else 'sqlite'}"
             + (f", {' '.join(args.env)}" if args.env else ""))
    times = []
    for n in range(args.rounds):
        elapsed = round_once(args.binary, args, extra_env)
        times.append(elapsed)
        print(f"   round {n + 1}: {elapsed:.2f} s", flush=True)
    median = statistics.median(times)
    print(f"== queue job ({label}): median {median:.2f} s, "
          f"{args.intents / median:.1f} intents merged/s")


if __name__ == "__main__":
    main()
