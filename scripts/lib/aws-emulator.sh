# The AWS emulator for tests and the local stack, on a free loopback port, reached only through
# the real AWS SDK (AWS_ENDPOINT_URL): moto server, or with AWS_EMULATOR=localstack, LocalStack
# (localstack-core from PyPI, run on the host with the pins and settings of the stack notes).
# Source this file, then:
#   aws_emulator_start   installs the emulator from PyPI if missing, starts it, exports AWS_*
#   aws_emulator_stop    stops it (safe to call twice; put it in a trap)

MOTO_VERSION=5.2.1
EMULATOR_PID=""
LOCALSTACK_VERSION=2026.3.0
LOCALSTACK_VENV=${LOCALSTACK_VENV:-.venv-localstack}

# Fake credentials and a region: the SDK never looks for real ones (nor probes IMDS).
aws_emulator_export() {
  export AWS_ENDPOINT_URL="http://127.0.0.1:$1" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
}

# LocalStack needs Python 3.13 (PEP 695 syntax), cbor2 < 6 and pyOpenSSL < 25; it takes about
# 6 minutes to install, once.
localstack_start() {
  local port python
  if ! "$LOCALSTACK_VENV/bin/python" -c 'import localstack' >/dev/null 2>&1; then
    python=$(ls -d "$HOME"/.pyenv/versions/3.13*/bin/python3 2>/dev/null | head -1)
    python=${python:-$(command -v python3.13 || true)}
    [ -n "$python" ] || { echo "LocalStack needs Python 3.13, which is not here" >&2; return 1; }
    echo "LocalStack not found: installing localstack-core==$LOCALSTACK_VERSION from PyPI (about 6 min)" >&2
    "$python" -m venv "$LOCALSTACK_VENV" >&2 &&
      "$LOCALSTACK_VENV/bin/pip" install -q "localstack-core[runtime]==$LOCALSTACK_VERSION" "cbor2<6" "pyopenssl<25" >&2 ||
      return 1
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # No DNS server of its own, loopback only, no Twisted gateway, path-style queue URLs.
  DNS_ADDRESS=0 GATEWAY_LISTEN="127.0.0.1:$port" GATEWAY_SERVER=hypercorn SERVICES=sqs,secretsmanager \
    DISABLE_EVENTS=1 SQS_ENDPOINT_STRATEGY=path \
    "$LOCALSTACK_VENV/bin/python" -m localstack.runtime.main >/dev/null 2>&1 &
  EMULATOR_PID=$!
  for _ in $(seq 1 300); do
    if curl -sf "http://127.0.0.1:$port/_localstack/health" 2>/dev/null | grep -q '"sqs": "\(available\|running\)"'; then
      aws_emulator_export "$port"
      echo "LocalStack $LOCALSTACK_VERSION on 127.0.0.1:$port"
      return 0
    fi
    sleep 0.2
  done
  echo "LocalStack did not start" >&2
  return 1
}

aws_emulator_start() {
  if [ "${AWS_EMULATOR:-moto}" = localstack ]; then
    localstack_start
    return
  fi
  local port
  if ! python3 -c 'import moto.server, flask' >/dev/null 2>&1; then
    echo "moto not found: installing moto[server]==$MOTO_VERSION from PyPI" >&2
    python3 -m pip install -q "moto[server]==$MOTO_VERSION" >&2 || return 1
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # As a module: no console script (and no pyenv shim) needed after a fresh install.
  python3 -m moto.server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  EMULATOR_PID=$!
  for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:$port/moto-api/"; then
      aws_emulator_export "$port"
      echo "moto $MOTO_VERSION on 127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  echo "moto server did not start" >&2
  return 1
}

aws_emulator_stop() {
  [ -n "$EMULATOR_PID" ] || return 0
  kill "$EMULATOR_PID" 2>/dev/null || true
  # LocalStack can take its time: 5 s, then it and its children are killed.
  for _ in $(seq 1 50); do kill -0 "$EMULATOR_PID" 2>/dev/null || break; sleep 0.1; done
  pkill -KILL -P "$EMULATOR_PID" 2>/dev/null || true
  kill -KILL "$EMULATOR_PID" 2>/dev/null || true
  wait "$EMULATOR_PID" 2>/dev/null || true
  EMULATOR_PID=""
}
