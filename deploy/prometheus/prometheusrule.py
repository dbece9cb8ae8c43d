#!/usr/bin/env python3
"""The alerting rules as a Prometheus Operator PrometheusRule.

deploy/prometheus/authd.rules.yml is the source (promtool checks and tests it);
deploy/overlays/monitoring/prometheusrule.yaml carries the same groups
for clusters that run the operator. This writes the second from the first:

    python3 deploy/prometheus/prometheusrule.py          # regenerate
    python3 deploy/prometheus/prometheusrule.py --check  # CI: fail if they differ

The check compares the parsed rule groups, so formatting never matters.
"""

import pathlib
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
RULES = HERE / "authd.rules.yml"
TARGET = HERE.parent / "overlays" / "monitoring" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/authd.rules.yml by deploy/prometheus/prometheusrule.py:
# edit the rules there and run the script (CI fails when the two differ).
# Your Prometheus may select rules by a label (kube-prometheus-stack uses
# `release: <its release name>`): add it in an overlay of your own if so.
"""


class Dumper(yaml.SafeDumper):
    """Multi-line strings (the longer expressions) as literal blocks."""


def _string(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _string)


def expected():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "authd",
            "labels": {
                "app.kubernetes.io/name": "authd",
                "app.kubernetes.io/instance": "authd",
                "app.kubernetes.io/component": "server",
                "app.kubernetes.io/part-of": "authd",
            },
        },
        "spec": {"groups": groups},
    }


def main():
    want = expected()
    if sys.argv[1:] == ["--check"]:
        have = yaml.safe_load(TARGET.read_text()) if TARGET.is_file() else None
        if have != want:
            sys.exit(
                f"{TARGET} does not match {RULES}: run python3 deploy/prometheus/prometheusrule.py"
            )
        print(f"{TARGET.name} agrees with {RULES.name}")
        return
    if sys.argv[1:]:
        sys.exit(__doc__)
    text = yaml.dump(want, Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True)
    TARGET.write_text(HEADER + text)
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
