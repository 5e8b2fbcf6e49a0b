#!/usr/bin/env python3
"""Feeds the SQS queue to the worker function the way AWS's event source mapping does, for the
local stack: batches of up to CONVERGE_WORKER_BATCH_SIZE (at most 10) messages, gathered for up
to CONVERGE_WORKER_POLL_INTERVAL seconds (the batching window, at most 20), handed to the
function as an SQS event; the messages the function does not report as failed are deleted,
the failed ones come back after the visibility timeout and move to the DLQ after the redrive
policy's maxReceiveCount receives. Every 60 s it invokes the function with the schedule's
sweep event, as EventBridge does.

Usage: sqs-bridge.py QUEUE_URL INVOKE_URL (the function's invocations URL)."""

import json
import os
import sys
import time
import urllib.request

import boto3


def invoke(url, event):
    request = urllib.request.Request(
        url, data=json.dumps(event).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as answer:
        return json.loads(answer.read() or b"{}")


def main():
    queue_url, invoke_url = sys.argv[1:3]
    batch = max(1, min(int(os.environ.get("CONVERGE_WORKER_BATCH_SIZE", "10")), 10))
    window = max(0, min(int(os.environ.get("CONVERGE_WORKER_POLL_INTERVAL", "5")), 20))
    sqs = boto3.client("sqs")
    next_sweep = 0.0
    while True:
        if time.monotonic() >= next_sweep:
            try:
                print(f"bridge: sweep {invoke(invoke_url, {'kind': 'sweep'})}", flush=True)
            except OSError as error:
                print(f"bridge: sweep failed: {error}", flush=True)
            next_sweep = time.monotonic() + 60
        received = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=batch,
            WaitTimeSeconds=window,
            AttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            continue
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": {},
                    "md5OfBody": m.get("MD5OfBody", ""),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:local",
                    "awsRegion": os.environ.get("AWS_REGION", "us-east-1"),
                }
                for m in received
            ]
        }
        try:
            answer = invoke(invoke_url, event)
        except OSError as error:
            # The whole batch comes back after the visibility timeout, as on AWS.
            print(f"bridge: the worker failed: {error}", flush=True)
            continue
        failed = {f.get("itemIdentifier") for f in answer.get("batchItemFailures", [])}
        done = [m for m in received if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                    for n, m in enumerate(done[start : start + 10])
                ],
            )
        print(f"bridge: {len(received)} message(s), {len(failed)} failed", flush=True)


if __name__ == "__main__":
    main()
