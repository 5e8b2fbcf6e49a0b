#!/usr/bin/env python3
"""Differential test of `converge policy eval` against the original Python risk engine.

Not part of CI: it needs a checkout of the original implementation, which this repository
does not carry. Run it by hand after touching the risk or policy code:

    python3.12 -m venv /tmp/ref && /tmp/ref/bin/pip install networkx==3.4.2 numpy scipy
    cargo build -p converge-cli
    /tmp/ref/bin/python scripts/diff-against-reference.py --reference-src PATH/src --seed 1 --cases 300

PATH/src is the `src` folder of the original (it holds the `converge` package). Python 3.12 or
later is required: its float `sum` is the one the reference relies on. The script draws random
changes (nested and non-ASCII paths, duplicates, zero-weight couplings, conflicts, dependencies,
scope hints), evaluates each with both engines and compares the JSON outputs exactly; the
spiral bomb's cycles, which are not deterministic in the reference, are compared by count.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def random_change(rnd, n):
    parts = ["src", "lib", "app", "docs", "core", "x", "ü", "api", "pkg"]

    def path():
        return "/".join(rnd.choice(parts) for _ in range(rnd.randint(1, 4))) + rnd.choice([".rs", ".py", ""])

    files = [path() for _ in range(rnd.randint(0, rnd.choice([5, 30, 80])))]
    conflicts = [path() for _ in range(rnd.choice([0, 0, 0, 1, 3]))]
    return {
        "intent": {
            "id": "i-%d-%s" % (n, rnd.choice(["a", "ß", "o/r:pr-3"])),
            "source": "feature/f",
            "target": rnd.choice(["main", "develop", "release", "feature-x"]),
            "risk_level": rnd.choice(["low", "medium", "high", "critical"]),
            "dependencies": ["d%d" % rnd.randint(0, 6) for _ in range(rnd.randint(0, 5))],
            "technical": {"scope_hint": [rnd.choice(["src", "docs", "API", "core", "x.rs", files[0] if files else "z"])
                                         for _ in range(rnd.randint(0, 3))]},
        },
        "simulation": {"mergeable": not conflicts, "conflicts": conflicts, "files_changed": files},
        "coupling": [{"file_a": rnd.choice(files) if files and rnd.random() < 0.7 else path(),
                      "file_b": path(), "co_changes": rnd.randint(0, 14), "source": "git-log"}
                     for _ in range(rnd.randint(0, 15))],
    }


def reference_assessment(change):
    from converge import policy
    from converge.models import Intent, RiskLevel, Simulation, Status
    from converge.risk.eval import classify_risk_level, evaluate_risk

    config = policy.load_config()
    i = change["intent"]
    intent = Intent(id=i["id"], source=i["source"], target=i["target"], status=Status.READY,
                    risk_level=RiskLevel(i["risk_level"]), dependencies=i["dependencies"],
                    technical=i["technical"])
    sim = Simulation(**change["simulation"])
    risk = evaluate_risk(intent, sim, coupling_data=change["coupling"]).to_dict()
    risk.pop("timestamp")
    risk.pop("tenant_id")
    level = classify_risk_level(risk["risk_score"])
    checks = config.profile_for(RiskLevel(i["risk_level"]))["checks"]
    gates = policy.evaluate(risk_level=level, checks_passed=checks, entropy_delta=risk["entropy_score"],
                            containment_score=risk["containment_score"], coherence_score=100.0,
                            config=config, origin_type="human")
    return {
        "risk": risk,
        "reclassified_level": None if level.value == i["risk_level"] else level.value,
        "policy": {"verdict": gates.verdict.value, "profile_used": gates.profile_used,
                   "gates": [{"gate": g.gate.value, "passed": g.passed, "value": g.value,
                              "threshold": g.threshold, "reason": g.reason} for g in gates.gates]},
        "risk_gate": policy.evaluate_risk_gate(risk_score=risk["risk_score"], damage_score=risk["damage_score"],
                                               propagation_score=risk["propagation_score"], intent_id=i["id"]),
    }


def differences(actual, expected, path=""):
    if isinstance(expected, dict):
        for key, value in expected.items():
            if key not in actual:
                yield f"{path}.{key}: missing"
            else:
                yield from differences(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            yield f"{path}: {actual!r} vs {expected!r}"
        else:
            for i, (a, e) in enumerate(zip(actual, expected)):
                yield from differences(a, e, f"{path}[{i}]")
    elif actual != expected or type(actual) is not type(expected):
        yield f"{path}: {actual!r} vs {expected!r}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-src", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--converge", type=Path, default=REPO / "target/debug/converge")
    args = parser.parse_args()
    if sys.version_info < (3, 12):
        sys.exit("Python 3.12 or later is required")
    sys.path.insert(0, str(args.reference_src))
    os.chdir(args.reference_src.parent)  # where the reference looks for policy.default.json

    rnd = random.Random(args.seed)
    mismatches = 0
    for n in range(args.cases):
        change = random_change(rnd, n)
        expected = json.loads(json.dumps(reference_assessment(change)))
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"input": change}, f)
        out = subprocess.run([str(args.converge), "policy", "eval", "--input", f.name, "--json"],
                             capture_output=True, text=True, check=True)
        os.unlink(f.name)
        actual = json.loads(out.stdout)
        for doc in (actual, expected):
            for bomb in doc["risk"]["bombs"]:
                if bomb["type"] == "spiral":
                    bomb["cycles"] = len(bomb["cycles"])
        diffs = list(differences(actual, expected))
        if diffs:
            mismatches += 1
            print(f"case {n}: " + json.dumps({"input": change}, ensure_ascii=False))
            for d in diffs[:10]:
                print("  " + d)
    print(f"{args.cases - mismatches} passed, {mismatches} failed")
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
