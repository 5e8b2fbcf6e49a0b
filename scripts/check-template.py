#!/usr/bin/env python3
"""Checks template.yaml offline: cfn-lint, then the SAM translator's transform (what AWS runs at
deploy time), and that the worker's event source mapping is what the runbook promises.

Usage: python3 scripts/check-template.py [template.yaml]. Needs cfn-lint and aws-sam-translator
(scripts/test.sh installs them into a virtual environment when missing)."""

import copy
import os
import subprocess
import sys

import yaml
from samtranslator.public.translator import ManagedPolicyLoader  # noqa: F401 (the interface)
from samtranslator.translator.transform import transform


class NoManagedPolicies:
    """SAM's policy templates need no IAM lookup; nothing else in the template names one."""

    def load(self):
        return {}


def cfn_constructors():
    """Reads CloudFormation's short forms (!Ref, !GetAtt, !Sub…) as their long forms."""

    def multi(loader, suffix, node):
        tag = "Fn::" + suffix if suffix != "Ref" else "Ref"
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if tag == "Fn::GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {tag: value}

    yaml.SafeLoader.add_multi_constructor("!", multi)


# Settings of the runbook's table that a deployment does not set: the CLI's, the local
# repository's, the local sweep's, `converge serve`'s HTTP server's (API Gateway and Lambda
# set those limits on AWS), and the plain forms of what the template keeps in Secrets Manager.
NOT_DEPLOYED = {
    "CONVERGE_API_URL", "CONVERGE_API_KEY", "CONVERGE_DB_PATH", "CONVERGE_PG_DSN",
    "CONVERGE_GITHUB_WEBHOOK_SECRET", "CONVERGE_GITHUB_APP_PRIVATE_KEY",
    "CONVERGE_GITHUB_APP_PRIVATE_KEY_PATH", "CONVERGE_REPO_PATH", "CONVERGE_LOCAL_CHECKS",
    "CONVERGE_LOCAL_CHECK_COMMANDS", "CONVERGE_CHECK_TIMEOUT", "CONVERGE_WORKER_SWEEP_INTERVAL",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "CONVERGE_HTTP_HEADER_TIMEOUT_SECONDS", "CONVERGE_HTTP_BODY_TIMEOUT_SECONDS",
    "CONVERGE_HTTP_IDLE_TIMEOUT_SECONDS", "CONVERGE_HTTP_MAX_CONNECTIONS",
    "CONVERGE_HTTP_SHUTDOWN_SECONDS",
}


def missing_settings(template):
    """Every deployable setting of docs/RUNBOOK.md's environment table is set by the template."""
    runbook = os.path.join(os.path.dirname(__file__), "..", "docs", "RUNBOOK.md")
    with open(runbook, encoding="utf-8") as handle:
        section = handle.read().split("## Environment", 1)[1].split("\n## ", 1)[0]
    documented = {
        line.split("`")[1] for line in section.splitlines() if line.startswith("| `")
    }
    variables = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for resource in template["Resources"].values():
        env = resource.get("Properties", {}).get("Environment", {}).get("Variables", {})
        variables.update(env)
    return [
        f"{name} (docs/RUNBOOK.md) is not set by the template"
        for name in sorted(documented - NOT_DEPLOYED - variables)
    ]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    # cfn-lint's own entry point, through this interpreter (no console script needed).
    lint = subprocess.run(
        [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.argv[0] = 'cfn-lint'; main()", path],
        check=False,
    )
    if lint.returncode != 0:
        print(f"cfn-lint found problems in {path}", file=sys.stderr)
        return 1
    cfn_constructors()
    with open(path, encoding="utf-8") as handle:
        template = yaml.safe_load(handle)
    # The translator wants code in S3; `sam build`/`deploy` put it there.
    staged = copy.deepcopy(template)
    for resource in staged["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://placeholder/code.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    output = transform(staged, {}, NoManagedPolicies())
    mappings = [
        r["Properties"]
        for r in output["Resources"].values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    problems = []
    if len(mappings) != 1:
        problems.append(f"expected one event source mapping, found {len(mappings)}")
    else:
        mapping = mappings[0]
        if mapping.get("FunctionResponseTypes") != ["ReportBatchItemFailures"]:
            problems.append("the worker does not report partial batch failures")
        if mapping.get("BatchSize") != {"Ref": "WorkerBatchSize"}:
            problems.append("BatchSize does not come from WorkerBatchSize")
        if mapping.get("MaximumBatchingWindowInSeconds") != {"Ref": "WorkerPollInterval"}:
            problems.append("the batching window does not come from WorkerPollInterval")
    functions = [r for r in output["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    for function in functions:
        props = function["Properties"]
        if props.get("Runtime") != "provided.al2023" or props.get("Handler") != "bootstrap":
            problems.append(f"a function is not a provided.al2023 bootstrap: {props.get('Runtime')}")
    if len(functions) != 3:
        problems.append(f"expected three functions, found {len(functions)}")
    problems.extend(missing_settings(template))
    for problem in problems:
        print(f"template: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{path}: cfn-lint clean; the SAM transform gives {len(output['Resources'])} resources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
