#!/usr/bin/env python3
"""The suite must not shrink silently: compare the tests that passed with tests/floor.txt.

    tests/floor.py cargo  CARGO_TEST_LOG     # `cargo test 2>&1` output
    tests/floor.py pytest JUNIT_XML          # `pytest --junitxml=...` report
    tests/floor.py self-test                 # the check itself refuses what it must

Every target named in tests/floor.txt must have run, and passed at least its floor's number of
tests. A floor is a minimum, not an exact count: tests added since the floor was last raised
pass, a lost `#[test]`, a renamed or dropped test file or a parametrisation that collapsed fails.
Targets that ran but have no floor yet are listed so their floor can be added. Standard library
only (runs with any python3).
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

FLOORS = Path(__file__).resolve().parent / "floor.txt"


def read_floors(text: str, kind: str) -> dict[str, int]:
    floors: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("cargo", "pytest") or not parts[2].isdigit():
            raise SystemExit(f"floor.txt:{n}: expected `cargo|pytest TARGET COUNT`, got {line!r}")
        if parts[0] == kind:
            floors[parts[1]] = int(parts[2])
    return floors


def cargo_counts(log: str) -> dict[str, int]:
    """Passed tests per cargo test target, from `cargo test` output (stderr and stdout)."""
    counts: dict[str, int] = {}
    target = None
    for line in log.splitlines():
        m = re.match(r"^\s*Running (?:unittests )?(\S+) \(", line)
        if m:
            target = m.group(1)
            continue
        m = re.match(r"^\s*Doc-tests (\S+)", line)
        if m:
            target = f"doc:{m.group(1)}"
            continue
        m = re.match(r"^test result: \w+\. (\d+) passed; (\d+) failed", line)
        if m and target is not None:
            counts[target] = counts.get(target, 0) + int(m.group(1))
            target = None
    return counts


def pytest_counts(junit: str) -> dict[str, int]:
    """Passed tests per test file, from a pytest JUnit XML report."""
    counts: dict[str, int] = {}
    for case in ET.fromstring(junit).iter("testcase"):
        if any(child.tag in ("failure", "error", "skipped") for child in case):
            continue
        module = case.get("classname", "").split(".")[0]
        counts[module] = counts.get(module, 0) + 1
    return counts


def compare(floors: dict[str, int], counts: dict[str, int]) -> list[str]:
    problems = []
    for target, floor in sorted(floors.items()):
        got = counts.get(target)
        if got is None:
            problems.append(f"{target}: did not run (floor {floor}); renamed or removed?")
        elif got < floor:
            problems.append(f"{target}: {got} passed, fewer than the floor of {floor}")
    return problems


def check(kind: str, report: str, floors_text: str) -> int:
    floors = read_floors(floors_text, kind)
    if not floors:
        print(f"floor: no {kind} floors in {FLOORS}", file=sys.stderr)
        return 1
    counts = cargo_counts(report) if kind == "cargo" else pytest_counts(report)
    problems = compare(floors, counts)
    for target in sorted(t for t in set(counts) - set(floors) if counts[t] > 0):
        print(f"floor: {kind} {target} ran {counts[target]} tests and has no floor yet: "
              f"add `{kind} {target} {counts[target]}` to tests/floor.txt")
    for p in problems:
        print(f"floor: {kind} {p}", file=sys.stderr)
    total = sum(counts.values())
    print(f"floor: {kind}: {total} tests passed in {len(counts)} targets; "
          f"{'FAILED' if problems else 'every floor met'}")
    return 1 if problems else 0


def self_test() -> int:
    floors = "cargo tests/a.rs 2\ncargo src/lib.rs 1\npytest test_x 2\n"
    log = ("     Running unittests src/lib.rs (target/debug/deps/x)\n"
           "test result: ok. 3 passed; 0 failed; 0 ignored\n"
           "     Running tests/a.rs (target/debug/deps/a)\n"
           "test result: ok. 2 passed; 0 failed; 0 ignored\n")
    junit = ('<testsuites><testsuite><testcase classname="test_x" name="a"/>'
             '<testcase classname="test_x" name="b"/>'
             '<testcase classname="test_x" name="c"><skipped/></testcase></testsuite></testsuites>')
    quiet = open("/dev/null", "w")  # noqa: SIM115
    out, err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = quiet
    try:
        results = {
            "floors met": check("cargo", log, floors) == 0 and check("pytest", junit, floors) == 0,
            "one test fewer": check("cargo", log.replace("2 passed", "1 passed"), floors) == 1,
            "a target missing": check("cargo", log.replace("tests/a.rs", "tests/b.rs"), floors) == 1,
            "a skipped test does not count": check("pytest", junit.replace(
                'name="b"/>', 'name="b"><skipped/></testcase>'), floors) == 1,
            "a failed run does not count": check("pytest", junit.replace(
                'name="a"/>', 'name="a"><failure/></testcase>'), floors) == 1,
        }
    finally:
        sys.stdout, sys.stderr = out, err
        quiet.close()
    for name, ok in results.items():
        print(f"floor self-test: {name}: {'ok' if ok else 'FAILED'}")
    return 0 if all(results.values()) else 1


def main(argv: list[str]) -> int:
    if argv == ["self-test"]:
        return self_test()
    if len(argv) != 2 or argv[0] not in ("cargo", "pytest"):
        print(__doc__, file=sys.stderr)
        return 2
    return check(argv[0], Path(argv[1]).read_text(errors="replace"), FLOORS.read_text())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
