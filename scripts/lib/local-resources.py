#!/usr/bin/env python3
"""Creates the local stack's AWS resources (infra/local-stack.json) on the emulator named by
AWS_ENDPOINT_URL, and prints the settings that point Converge at them, one `NAME=value` line
each.

Usage: local-resources.py infra/local-stack.json WEBHOOK_SECRET APP_KEY_FILE DSN"""

import json
import sys

import boto3


def main():
    spec_path, webhook_secret, key_file, dsn = sys.argv[1:5]
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    sqs = boto3.client("sqs")
    dlq_url = sqs.create_queue(QueueName=spec["dead_letter_queue"]["name"])["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    queue = spec["queue"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(queue["max_receive_count"])}
    queue_url = sqs.create_queue(
        QueueName=queue["name"],
        Attributes={
            "VisibilityTimeout": str(queue["visibility_timeout"]),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    with open(key_file, encoding="utf-8") as handle:
        values = {"webhook": webhook_secret, "app_key": handle.read(), "dsn": dsn}
    manager = boto3.client("secretsmanager")
    print(f"CONVERGE_QUEUE_URL={queue_url}")
    print(f"CONVERGE_DLQ_URL={dlq_url}")
    for kind, secret in spec["secrets"].items():
        arn = manager.create_secret(Name=secret["name"], SecretString=values[kind])["ARN"]
        print(f"{secret['variable']}={arn}")


if __name__ == "__main__":
    main()
