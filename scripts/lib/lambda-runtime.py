#!/usr/bin/env python3
"""A Lambda Runtime API emulator for one cold start: runs a function's bootstrap with the
Lambda environment, hands it EVENT_FILE as its first invocation, and prints, as one JSON line,
the time from starting the process to receiving its answer, and the answer.

Usage: lambda-runtime.py NAME EVENT_FILE BOOTSTRAP"""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time


def main():
    name, event_file, bootstrap = sys.argv[1:4]
    with open(event_file, "rb") as handle:
        event = handle.read()
    done = threading.Event()
    result = {}

    class Runtime(http.server.BaseHTTPRequestHandler):
        handed_out = False

        def log_message(self, *args):
            pass

        def do_GET(self):
            if not self.path.endswith("/runtime/invocation/next"):
                self.send_error(404)
                return
            if Runtime.handed_out:
                done.wait(60)
                self.send_error(410)
                return
            Runtime.handed_out = True
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", "cold-start-1")
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30_000))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn", f"arn:aws:lambda:us-east-1:000000000000:function:{name}")
            self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
            self.send_header("Content-Length", str(len(event)))
            self.end_headers()
            self.wfile.write(event)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            result["seconds"] = time.monotonic() - started
            result["ok"] = self.path.endswith("/response")
            result["answer"] = body.decode(errors="replace")
            self.send_response(202)
            self.end_headers()
            done.set()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            # The function is stopped while it waits for its next event: its connection is
            # gone when the 410 is written. Nothing to report.
            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", port), Runtime)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "cold-start",
    })
    started = time.monotonic()
    process = subprocess.Popen([bootstrap], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    finished = done.wait(60)
    process.kill()
    _, stderr = process.communicate()
    server.shutdown()
    if not finished:
        print(json.dumps({"function": name, "error": "no answer", "stderr": stderr.decode(errors="replace")[-2000:]}))
        sys.exit(1)
    print(json.dumps({"function": name, "cold_start_ms": round(result["seconds"] * 1000, 1),
                      "ok": result["ok"], "answer": result["answer"][:300]}))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
