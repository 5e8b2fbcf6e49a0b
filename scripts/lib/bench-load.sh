# Shared by the HTTP load benchmarks (bench-api.sh, bench-webhook.sh): starting a release
# `converge serve`, and loading it with wrk while counting the CPU it (and PostgreSQL) spent.
# Expects BIN (the binary) and WORK (a scratch directory); sets SERVER_PID, PORT, STARTUP_MS.

# Starts the server with the given environment; prints milliseconds from exec to the first
# answered request, and leaves SERVER_PID and PORT set.
start_server() {
  local out
  out=$(python3 - "$BIN" "$@" <<'PY'
import os, socket, subprocess, sys, time, urllib.request
binary, env_pairs = sys.argv[1], sys.argv[2:]
env = dict(os.environ, **dict(p.split("=", 1) for p in env_pairs))
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
start = time.perf_counter()
proc = subprocess.Popen([binary, "serve", "--port", str(port), "--no-worker"], env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1) as r:
            if r.status == 200:
                break
    except Exception:
        if proc.poll() is not None:
            sys.exit("server exited")
        time.sleep(0.0005)
print(proc.pid, port, round((time.perf_counter() - start) * 1000, 1))
PY
)
  read -r SERVER_PID PORT STARTUP_MS <<<"$out"
}

# CPU ticks (user + system) of a process, and of every PostgreSQL process on the machine.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# PostgreSQL's backends exit with their connections; the postmaster reaps them and counts their
# time as its children's (fields 16 and 17).
pg_ticks() {
  local total=0 pid
  for pid in $(pgrep -x postgres 2>/dev/null); do
    total=$((total + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

# Loads the server with wrk (the arguments after the label; CONNECTIONS, default 32) and prints requests per second,
# latency, and the CPU spent per request and per KB served: the server's, and PostgreSQL's.
load() {
  local label=$1 bytes=$2; shift 2
  local server_before pg_before requests
  server_before=$(ticks "$SERVER_PID"); pg_before=$(pg_ticks)
  wrk -t2 -c"${CONNECTIONS:-32}" -d"$DURATION" --latency "$@" > "$WORK/wrk.out"
  requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.out")
  python3 - "$label" "$bytes" "$requests" "$HZ" "$server_before" "$(ticks "$SERVER_PID")" \
    "$pg_before" "$(pg_ticks)" "$WORK/wrk.out" <<'PY'
import re, sys
label, size, requests, hz, s0, s1, p0, p1, path = sys.argv[1:]
out = open(path).read()
requests, hz, size = int(requests), int(hz), int(size)
rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
p50 = re.search(r"\s50%\s+(\S+)", out).group(1)
p99 = re.search(r"\s99%\s+(\S+)", out).group(1)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
server_ms = (int(s1) - int(s0)) * 1000 / hz / requests
# Not below zero: a cluster of an earlier run that was still exiting leaves the count.
pg_ms = max(0, int(p1) - int(p0)) * 1000 / hz / requests
per_kb = (server_ms + pg_ms) * 1000 / max(size / 1024, 1e-9)
print(f"   {label}: {float(rps):,.0f} req/s, p50 {p50}, p99 {p99}, CPU per request "
      f"{server_ms:.3f} ms server + {pg_ms:.3f} ms PostgreSQL, {per_kb:.1f} µs per KB "
      f"({size} B)" + (f", {non2xx.group(1)} non-2xx/3xx" if non2xx else ""))
PY
}


# The server's peak RSS (VmHWM), and what it is made of at the end of the load: anonymous memory
# (heap, stacks) and the pages of files it maps (mostly the binary's code), and its threads.
rss_report() {
  awk '/^VmHWM/ {peak = $2} /^RssAnon/ {anon = $2} /^RssFile/ {file = $2} /^Threads/ {threads = $2}
       END {printf "%d kB (at the end: anonymous %d kB, mapped files %d kB, %d threads)\n", peak, anon, file, threads}' \
    "/proc/$1/status"
}
