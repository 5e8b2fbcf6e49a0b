"""schemathesis hooks for scripts/api-fuzz.sh (loaded through SCHEMATHESIS_HOOKS).

The fuzzer draws Idempotency-Key values from a small space and sends the same key with
different bodies, which the API rightly refuses (422: a key names one request). A well-formed
key is made unique per request so each request is judged on its own; malformed keys are left
as drawn, so their refusal is still checked. Replays under one key are tested by the
integration tests (cli/tests/integration/concurrency.rs).
"""

import re
import uuid

import schemathesis

WELL_FORMED = re.compile(r"^[\x21-\x7e]{1,255}$")


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str) \
                and WELL_FORMED.match(headers[name]):
            headers[name] = f"fuzz-{uuid.uuid4()}"
