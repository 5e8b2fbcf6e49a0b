#!/usr/bin/env python3
"""Checks template.yaml offline: cfn-lint, then the SAM translator's transform (what AWS runs at
deploy time), that the worker's event source mapping is what the runbook promises, that every
stack output docs/RUNBOOK.md names exists, and that its `cargo lambda deploy` steps name every
variable the template sets.

Usage: python3 scripts/check-template.py [template.yaml]. Needs cfn-lint and aws-sam-translator
(scripts/test.sh installs them into a virtual environment when missing)."""

import copy
import os
import re
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
# set those limits on AWS), the policy file's (a file on the machine, which the functions' zips
# do not carry), and the plain forms of what the template keeps in Secrets Manager.
NOT_DEPLOYED = {
    "CONVERGE_API_URL", "CONVERGE_API_KEY", "CONVERGE_DB_PATH", "CONVERGE_PG_DSN",
    "CONVERGE_GITHUB_WEBHOOK_SECRET", "CONVERGE_GITHUB_APP_PRIVATE_KEY",
    "CONVERGE_GITHUB_APP_PRIVATE_KEY_PATH", "CONVERGE_REPO_PATH", "CONVERGE_LOCAL_CHECKS",
    "CONVERGE_LOCAL_CHECK_COMMANDS", "CONVERGE_CHECK_TIMEOUT", "CONVERGE_WORKER_SWEEP_INTERVAL",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "CONVERGE_HTTP_HEADER_TIMEOUT_SECONDS", "CONVERGE_HTTP_BODY_TIMEOUT_SECONDS",
    "CONVERGE_HTTP_IDLE_TIMEOUT_SECONDS", "CONVERGE_HTTP_MAX_CONNECTIONS",
    "CONVERGE_HTTP_SHUTDOWN_SECONDS", "CONVERGE_SQLITE_SYNCHRONOUS", "CONVERGE_AUDIT_SIGNING_KEY",
    "CONVERGE_POLICY_PATH",
}


def runbook():
    path = os.path.join(os.path.dirname(__file__), "..", "docs", "RUNBOOK.md")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def section(text, heading):
    """The text under `heading` (a `## ` or `### ` line) up to the next heading of any level;
    empty when there is no such heading."""
    start = text.find(f"\n{heading}\n")
    if start < 0:
        return ""
    rest = text[start + len(heading) + 2 :]
    return re.split(r"\n#{2,3} ", rest, maxsplit=1)[0]


def template_variables(template):
    """Every variable the template sets, and per function the ones only it gets."""
    shared = set(template["Globals"]["Function"]["Environment"]["Variables"])
    own = {
        name: set(resource["Properties"].get("Environment", {}).get("Variables", {}))
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    return shared, own


# How docs/RUNBOOK.md names a stack output: `"$(output NAME)"` (its helper), or a raw
# `OutputKey=='NAME'` query.
OUTPUT_CITED = re.compile(r"\$\(output (\w+)\)|OutputKey==['\"]?(\w+)")


def cited_outputs(text):
    return {a or b for a, b in OUTPUT_CITED.findall(text)}


def missing_outputs(template, text):
    """Every output the runbook names is one of the template's; its stop and start section
    names the mapping and the three functions, so that its commands can be run as written."""
    outputs = set(template.get("Outputs", {}))
    problems = [
        f"docs/RUNBOOK.md names the output {name}, which template.yaml does not have"
        for name in sorted(cited_outputs(text) - outputs)
    ]
    stop = cited_outputs(section(text, "## Stopping and starting"))
    needed = {"WorkerEventSourceMappingId", "ApiFunctionName", "WebhookFunctionName", "WorkerFunctionName"}
    problems.extend(
        f"docs/RUNBOOK.md's \"Stopping and starting\" does not use the output {name}"
        for name in sorted(needed - stop)
    )
    return problems


def undocumented_deploy_settings(template, text):
    """The runbook's `cargo lambda deploy` steps name every variable the template sets."""
    steps = section(text, "### Deploy with cargo lambda")
    if not steps:
        return ["docs/RUNBOOK.md has no \"### Deploy with cargo lambda\" section"]
    shared, own = template_variables(template)
    names = shared.union(*own.values())
    return [
        f"{name} (template.yaml) is not in docs/RUNBOOK.md's cargo lambda deploy steps"
        for name in sorted(names)
        if not re.search(rf"\b{name}\b", steps)
    ]


def missing_vpc_policy(output):
    """With VpcConfig (even an `!If` that may be AWS::NoValue) SAM gives each function's role
    the managed policy a function in a VPC needs for its network interfaces."""
    return [
        f"{name} lacks AWSLambdaVPCAccessExecutionRole"
        for name, resource in output["Resources"].items()
        if resource["Type"] == "AWS::IAM::Role"
        and name.endswith("FunctionRole")
        and "AWSLambdaVPCAccessExecutionRole" not in str(resource["Properties"].get("ManagedPolicyArns"))
    ]


def missing_settings(template):
    """Every deployable setting of docs/RUNBOOK.md's environment table is set by the template."""
    table = runbook().split("## Environment", 1)[1].split("\n## ", 1)[0]
    documented = {
        line.split("`")[1] for line in table.splitlines() if line.startswith("| `")
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
    problems.extend(missing_vpc_policy(output))
    text = runbook()
    problems.extend(missing_outputs(template, text))
    problems.extend(undocumented_deploy_settings(template, text))
    for problem in problems:
        print(f"template: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"{path}: cfn-lint clean; the SAM transform gives {len(output['Resources'])} resources; "
        f"the {len(cited_outputs(text))} outputs docs/RUNBOOK.md reads exist"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
