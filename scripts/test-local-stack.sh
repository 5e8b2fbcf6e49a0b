#!/usr/bin/env bash
# The local stack, end to end: scripts/dev-stack.sh comes up; a signed pull_request webhook
# goes to the webhook function's URL under cargo-lambda; the intent is merged in the GitHub
# fake by the worker function, fed from SQS by the bridge; Ctrl-C (SIGINT) stops the stack and
# no process it started is left. Prints one closing line: `local stack: N passed, N failed`.
# Arguments go to dev-stack.sh (`--emulator localstack`).
set -uo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp); err=$(mktemp)
cleanup() { rm -f "$out" "$err"; }
trap cleanup EXIT
failed=0
fail() { echo "local stack: $*" >&2; failed=1; }

# Job control: the stack gets a process group of its own and, unlike a plain background job,
# does not ignore SIGINT — so the Ctrl-C below is the one a person would type.
set -m
# A shell started in the background without job control (`bash scripts/test.sh &`) ignores
# SIGINT, its children inherit that, and a script cannot trap a signal ignored on entry: the
# stack starts with SIGINT back at its default, so its Ctrl-C trap works however this ran.
python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
  bash scripts/dev-stack.sh --port "${LOCAL_STACK_PORT:-9071}" "$@" >"$out" 2>"$err" &
stack=$!
set +m
for _ in $(seq 1 900); do grep -q '^stack ' "$out" && break; kill -0 "$stack" 2>/dev/null || break; sleep 1; done
line=$(grep '^stack ' "$out" || true)
if [ -z "$line" ]; then
  fail "did not come up"; tail -30 "$err" >&2
else
  field() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  api=$(field api); webhook=$(field webhook); secret=$(field secret)
  head=$(field head); base=$(field base); repo_path=$(field repo_path)
  read -r -a pids <<<"$(echo "$line" | sed 's/.* pids=//')"
  answer=$(python3 - "$webhook" "$secret" "$head" "$base" <<'PY'
import hmac, hashlib, json, sys, urllib.request
url, secret, head, base = sys.argv[1:5]
body = json.dumps({"action": "opened", "installation": {"id": 5}, "repository": {"full_name": "demo/app"},
                   "pull_request": {"number": 1, "title": "Docs", "head": {"ref": "feature", "sha": head},
                                    "base": {"ref": "main", "sha": base}}}).encode()
signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
request = urllib.request.Request(url, data=body, headers={
    "content-type": "application/json", "x-github-event": "pull_request",
    "x-github-delivery": "local-stack-1", "x-hub-signature-256": signature})
print(urllib.request.urlopen(request, timeout=300).status)
PY
)
  [ "$answer" = 202 ] || fail "the webhook answered $answer"
  status=""
  for _ in $(seq 1 300); do
    status=$(curl -s -H 'x-api-key: dev-key' "$api/v1/intents/demo%2Fapp:pr-1" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",""))' 2>/dev/null)
    [ "$status" = MERGED ] && break
    sleep 1
  done
  [ "$status" = MERGED ] || { fail "the intent is $status, not MERGED"; tail -20 "$err" >&2; }
  merged_head=$(git -C "$repo_path" rev-parse main^2 2>/dev/null || true)
  [ "$merged_head" = "$head" ] || fail "main^2 is '$merged_head', not the pull request's head $head"
fi

kill -INT "$stack" 2>/dev/null
for _ in $(seq 1 100); do kill -0 "$stack" 2>/dev/null || break; sleep 0.2; done
kill -0 "$stack" 2>/dev/null && { fail "still running after Ctrl-C"; kill -KILL -- "-$stack" 2>/dev/null; }
for pid in "${pids[@]:-}"; do
  [ -n "$pid" ] || continue
  if pgrep -g "$pid" >/dev/null 2>&1; then
    fail "processes of group $pid are left: $(pgrep -g "$pid" | tr '\n' ' ')"
    # Reported, then ended: left running, they would hold the port and fail the next run.
    kill -KILL -- "-$pid" 2>/dev/null
  fi
done
if pgrep -g "$stack" >/dev/null 2>&1; then
  fail "processes of the stack's group are left"
  kill -KILL -- "-$stack" 2>/dev/null
fi

if [ "$failed" = 0 ]; then
  echo "local stack: 1 passed, 0 failed"
else
  echo "local stack: 0 passed, 1 failed"
  exit 1
fi
