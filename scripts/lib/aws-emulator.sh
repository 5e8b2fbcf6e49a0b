# The AWS emulator for tests and the local stack: moto server on a free loopback port, reached
# only through the real AWS SDK (AWS_ENDPOINT_URL). Source this file, then:
#   aws_emulator_start   installs moto from PyPI if missing, starts it, exports the AWS_* variables
#   aws_emulator_stop    stops it (safe to call twice; put it in a trap)

MOTO_VERSION=5.2.1
MOTO_PID=""

aws_emulator_start() {
  local port
  if ! python3 -c 'import moto.server, flask' >/dev/null 2>&1; then
    echo "moto not found: installing moto[server]==$MOTO_VERSION from PyPI" >&2
    python3 -m pip install -q "moto[server]==$MOTO_VERSION" >&2 || return 1
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # As a module: no console script (and no pyenv shim) needed after a fresh install.
  python3 -m moto.server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:$port/moto-api/"; then
      # Fake credentials and a region: the SDK never looks for real ones (nor probes IMDS).
      export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
      export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
      echo "moto $MOTO_VERSION on 127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  echo "moto server did not start" >&2
  return 1
}

aws_emulator_stop() {
  [ -n "$MOTO_PID" ] || return 0
  kill "$MOTO_PID" 2>/dev/null || true
  wait "$MOTO_PID" 2>/dev/null || true
  MOTO_PID=""
}
