#!/usr/bin/env python3
"""Every metric the deployment files use exists, and every metric authd records has a
HELP text.

Known metrics: the families described in src/ (`describe_counter!("name", ...)` and
the like: the one list in src/telemetry.rs), a histogram's `_bucket`, `_sum` and
`_count`, and the process metrics of the metrics-process crate. Checked: every
expression of the Grafana dashboard (deploy/grafana/authd.json, which must parse as
JSON), of the alerting rules and of the rules' unit-test series. Run from the
repository root.
"""

import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(".")
# What metrics-process writes on Linux (its Collector::describe).
PROCESS = {
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
}
# PromQL words that look like metric names.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
    "or", "unless", "offset", "inf", "nan",
}

sources = "\n".join(p.read_text() for p in sorted(ROOT.glob("src/**/*.rs")))
described = {
    name: kind
    for kind, name in re.findall(r'describe_(counter|gauge|histogram)!\(\s*"([a-zA-Z_:][\w:]*)"', sources)
}
recorded = set(re.findall(r'\b(?:counter|gauge|histogram)!\(\s*"([a-zA-Z_:][\w:]*)"', sources))
# The gRPC layer registers handles with its label slices, not in one literal call;
# its names are described all the same.
problems = [f"src/ records {name} but describes it nowhere (no # HELP)" for name in sorted(recorded - set(described))]

known = set(PROCESS)
for name, kind in described.items():
    known.add(name)
    if kind == "histogram":
        known.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))


def names_in(expr):
    """The metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)                     # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                    # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)                   # dashboard variables
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][\w:]*", expr):
        word = match.group(0)
        rest = expr[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue  # a function or an operator
        if re.fullmatch(r"\d+[smhdwy]?", word):
            continue
        names.add(word)
    return names


def check(where, expr):
    for name in sorted(names_in(expr)):
        if name not in known:
            problems.append(f"{where}: {name} is not a metric authd serves")


dashboard_path = ROOT / "deploy/grafana/authd.json"
try:
    dashboard = json.loads(dashboard_path.read_text())
except ValueError as err:
    sys.exit(f"{dashboard_path}: not valid JSON: {err}")
exprs = 0


def walk(node, where):
    global exprs
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                # A variable's label_values(selector, label): the selector is PromQL.
                value = re.sub(r"label_values\((.*),\s*\w+\s*\)", r"\1", value)
                check(f"{where}", value)
                exprs += 1
            else:
                walk(value, f"{where} > {node.get('title', key)}" if key == "panels" else where)
    elif isinstance(node, list):
        for item in node:
            walk(item, where)


walk(dashboard, dashboard_path.name)
if not dashboard.get("panels"):
    problems.append(f"{dashboard_path}: no panels")

rules_path = ROOT / "deploy/prometheus/authd.rules.yml"
for group in yaml.safe_load(rules_path.read_text())["groups"]:
    for rule in group["rules"]:
        check(f"{rules_path.name} {rule.get('alert') or rule.get('record')}", rule["expr"])
        exprs += 1
tests_path = ROOT / "deploy/prometheus/authd.rules.test.yml"
for test in yaml.safe_load(tests_path.read_text())["tests"]:
    for series in test.get("input_series", []):
        check(f"{tests_path.name} {test.get('name')}", series["series"])
        exprs += 1

if problems:
    sys.exit("\n".join(problems))
print(f"metric names: {exprs} expressions use only the {len(known)} metrics authd serves; "
      f"all {len(recorded)} recorded names have a HELP text")
