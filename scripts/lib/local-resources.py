#!/usr/bin/env python3
"""Creates the local stack's AWS resources (infra/local-stack.json) on the emulator named by
AWS_ENDPOINT_URL, and prints the settings that point Converge at them, one `NAME=value` line
each.

The queues' attributes are not kept here: each queue names the template.yaml resource it
stands for, and takes that resource's properties (VisibilityTimeout, RedrivePolicy,
MessageRetentionPeriod…), a parameter's `!Ref` read as its default and a queue's `!GetAtt
….Arn` as the local queue's ARN. So the local queue redrives after the WorkerMaxRetries
default, like the deployed one, and the worker's retry bound is printed to match.

Usage: local-resources.py infra/local-stack.json WEBHOOK_SECRET APP_KEY_FILE DSN
       local-resources.py --plan infra/local-stack.json   (the queues' attributes; no emulator)"""

import json
import os
import sys

import yaml


class TemplateLoader(yaml.SafeLoader):
    """Reads CloudFormation's short forms (!Ref, !GetAtt, !Sub…) as their long forms."""


def _long_form(loader, suffix, node):
    tag = "Ref" if suffix == "Ref" else "Fn::" + suffix
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag == "Fn::GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {tag: value}


TemplateLoader.add_multi_constructor("!", _long_form)


def load_spec(spec_path):
    """The spec, and the template it names (a path relative to the spec's folder)."""
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    template_path = os.path.join(os.path.dirname(spec_path), spec["template"])
    with open(template_path, encoding="utf-8") as handle:
        template = yaml.load(handle, Loader=TemplateLoader)
    return spec, template


def queue_attributes(template, resource, arns):
    """The SQS attributes of the template's queue `resource`. `arns` maps the template's queue
    resources created so far to their local ARNs."""
    queue = template["Resources"][resource]
    if queue["Type"] != "AWS::SQS::Queue":
        raise SystemExit(f"template.yaml: {resource} is not an AWS::SQS::Queue")

    def resolve(value):
        if isinstance(value, dict) and list(value) == ["Ref"]:
            parameter = template["Parameters"].get(value["Ref"])
            if parameter is None or "Default" not in parameter:
                raise SystemExit(f"template.yaml: {resource} refers to {value['Ref']}, which has no default")
            return str(parameter["Default"])
        if isinstance(value, dict) and list(value) == ["Fn::GetAtt"]:
            name, attribute = value["Fn::GetAtt"]
            if attribute != "Arn" or name not in arns:
                raise SystemExit(f"template.yaml: {resource} needs {name}.{attribute}, which is not created before it")
            return arns[name]
        if isinstance(value, dict):
            if any(key == "Ref" or key.startswith("Fn::") for key in value):
                raise SystemExit(f"template.yaml: {resource}: {list(value)[0]} is not supported here")
            return {key: resolve(inner) for key, inner in value.items()}
        return str(value)

    attributes = {}
    for name, value in queue.get("Properties", {}).items():
        resolved = resolve(value)
        attributes[name] = json.dumps(resolved) if isinstance(resolved, dict) else resolved
    return attributes


def create_queues(spec, template, create):
    """Creates the dead-letter queue, then the queue (its redrive names the DLQ's ARN), through
    `create(name, attributes)`, which answers the queue's URL and ARN. Answers the URLs."""
    arns, urls = {}, {}
    for kind in ("dead_letter_queue", "queue"):
        queue = spec[kind]
        attributes = queue_attributes(template, queue["template_resource"], arns)
        urls[kind], arns[queue["template_resource"]] = create(queue["name"], attributes)
    return urls


def template_setting(template, variable):
    """A variable the template's Globals set from a parameter: that parameter's default."""
    value = template["Globals"]["Function"]["Environment"]["Variables"][variable]
    return str(template["Parameters"][value["Ref"]]["Default"])


def main():
    if sys.argv[1:2] == ["--plan"]:
        spec, template = load_spec(sys.argv[2])

        def show(name, attributes):
            print(json.dumps({"name": name, "attributes": attributes}, sort_keys=True))
            return f"local://{name}", f"arn:aws:sqs:local:000000000000:{name}"

        create_queues(spec, template, show)
        print(f"CONVERGE_WORKER_MAX_RETRIES={template_setting(template, 'CONVERGE_WORKER_MAX_RETRIES')}")
        return
    import boto3  # only here: --plan needs no AWS SDK

    spec_path, webhook_secret, key_file, dsn = sys.argv[1:5]
    spec, template = load_spec(spec_path)
    sqs = boto3.client("sqs")

    def create(name, attributes):
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    urls = create_queues(spec, template, create)
    with open(key_file, encoding="utf-8") as handle:
        values = {"webhook": webhook_secret, "app_key": handle.read(), "dsn": dsn}
    manager = boto3.client("secretsmanager")
    print(f"CONVERGE_QUEUE_URL={urls['queue']}")
    print(f"CONVERGE_DLQ_URL={urls['dead_letter_queue']}")
    # The retry bound and the redrive's maxReceiveCount are one parameter, as on AWS.
    print(f"CONVERGE_WORKER_MAX_RETRIES={template_setting(template, 'CONVERGE_WORKER_MAX_RETRIES')}")
    for kind, secret in spec["secrets"].items():
        arn = manager.create_secret(Name=secret["name"], SecretString=values[kind])["ARN"]
        print(f"{secret['variable']}={arn}")


if __name__ == "__main__":
    main()
