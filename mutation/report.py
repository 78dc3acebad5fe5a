"""Kill rates per module from a ``mutmut run``, checked against the accepted survivors.

Reads what mutmut recorded for each module of ``[tool.mutmut] only_mutate`` (its
``mutants/<module>.meta`` JSON, statuses named by mutmut's own table), prints one row per
module and lists every mutant that was not killed. A survivor listed in
``mutation/accepted-survivors.txt`` (``<mutant name>: <reason>``) is set aside: it counts
neither as killed nor as tested. Exits 1 when a survivor is not listed there (a test was
weakened, or new code is untested) or when the run left mutants unchecked; an entry that
names no surviving mutant is reported as stale, not fatal.

Run from the repository root after ``mutmut run`` (``make mutate`` does both)::

    python mutation/report.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mutmut.stats import status_by_exit_code

ACCEPTED_FILE = Path("mutation/accepted-survivors.txt")
# A mutant the tests noticed: they failed, or ran out of time (an endless loop).
KILLED = frozenset({"killed", "timeout"})
NOT_CHECKED = "not checked"


@dataclass
class ModuleResult:
    """The mutants of one module, by status."""

    module: str
    statuses: dict[str, str] = field(default_factory=dict)

    def count(self, accepted: Mapping[str, str]) -> tuple[int, int, int]:
        """``(killed, tested, accepted)``: tested leaves accepted survivors out."""
        killed = sum(status in KILLED for status in self.statuses.values())
        set_aside = sum(
            name in accepted and status not in KILLED for name, status in self.statuses.items()
        )
        return killed, len(self.statuses) - set_aside, set_aside

    def timed_out(self) -> list[str]:
        """Mutants killed by a timeout: a hang, or tests slower than mutmut allowed."""
        return [name for name, status in self.statuses.items() if status == "timeout"]

    def survivors(self) -> dict[str, str]:
        """Every mutant not killed, with its status (survived, no tests, ...)."""
        return {name: status for name, status in self.statuses.items() if status not in KILLED}


def modules_to_mutate(pyproject: Path = Path("pyproject.toml")) -> tuple[list[str], list[str]]:
    """The module paths ``make mutate`` mutates, and what is wrong with the configuration.

    ``[tool.apikeys.mutation.tests]`` names each module's tests; mutmut's ``only_mutate`` and
    test selection must name the same modules and the same test files.
    """
    tool = tomllib.loads(pyproject.read_text())["tool"]
    tests_by_module: dict[str, list[str]] = tool["apikeys"]["mutation"]["tests"]
    mutmut = tool["mutmut"]
    problems = []
    if set(mutmut["only_mutate"]) != set(tests_by_module):
        problems.append(
            "[tool.mutmut] only_mutate does not list the modules of [tool.apikeys.mutation.tests]"
        )
    own_tests = {test for tests in tests_by_module.values() for test in tests}
    if set(mutmut["pytest_add_cli_args_test_selection"]) != own_tests:
        problems.append(
            "[tool.mutmut] pytest_add_cli_args_test_selection does not list the test files of "
            "[tool.apikeys.mutation.tests]"
        )
    return list(tests_by_module), problems


def module_name(path: str) -> str:
    """``apikeys/_cache.py`` -> ``apikeys._cache``: the prefix of its mutants' names."""
    return path.removesuffix(".py").replace("/", ".")


def load_results(paths: Iterable[str], mutants: Path = Path("mutants")) -> list[ModuleResult]:
    """What mutmut recorded for each module (an empty result if it recorded nothing)."""
    results = []
    for path in paths:
        result = ModuleResult(module_name(path))
        meta = mutants / f"{path}.meta"
        if meta.exists():
            exit_codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
            result.statuses = {
                name: status_by_exit_code[code] for name, code in sorted(exit_codes.items())
            }
        results.append(result)
    return results


def parse_accepted(text: str) -> dict[str, str]:
    """``name: reason`` lines; ``#`` comments and blank lines are skipped.

    Raises:
        ValueError: A line has no reason, or a name comes twice.
    """
    accepted: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition(": ")
        if not reason.strip():
            raise ValueError(f"line {number}: expected '<mutant name>: <reason>', got {line!r}")
        if name in accepted:
            raise ValueError(f"line {number}: {name} is listed twice")
        accepted[name] = reason.strip()
    return accepted


def rate(killed: int, tested: int) -> str:
    return f"{100 * killed / tested:.1f} %" if tested else "-"


def report(results: list[ModuleResult], accepted: Mapping[str, str]) -> tuple[list[str], bool]:
    """The lines to print, and whether the run passes."""
    width = max([len("module"), *(len(result.module) for result in results)])
    lines = [
        f"{'module':<{width}}  {'mutants':>7}  {'killed':>6}  {'accepted':>8}  {'kill rate':>9}",
    ]
    totals = [0, 0, 0]
    unexplained: dict[str, str] = {}
    unchecked: list[str] = []
    surviving: set[str] = set()
    for result in results:
        killed, tested, set_aside = result.count(accepted)
        totals = [totals[0] + killed, totals[1] + tested, totals[2] + set_aside]
        lines.append(
            f"{result.module:<{width}}  {len(result.statuses):>7}  {killed:>6}  "
            f"{set_aside:>8}  {rate(killed, tested):>9}"
        )
        for name, status in result.survivors().items():
            surviving.add(name)
            if status == NOT_CHECKED:
                unchecked.append(name)
            elif name not in accepted:
                unexplained[name] = status
    lines.append(
        f"{'all':<{width}}  {totals[1] + totals[2]:>7}  {totals[0]:>6}  "
        f"{totals[2]:>8}  {rate(totals[0], totals[1]):>9}"
    )
    lines.append("(kill rate = killed / (mutants - accepted survivors))")
    if not any(result.statuses for result in results):
        lines.append("No mutmut results under mutants/: run `mutmut run` first.")
        return lines, False
    if unexplained:
        lines.append("")
        lines.append(f"Survivors not in {ACCEPTED_FILE} (`mutmut show <name>` shows each):")
        lines += [f"  {name}: {status}" for name, status in unexplained.items()]
    timed_out = [name for result in results for name in result.timed_out()]
    if timed_out:
        lines.append("")
        lines.append("Timed out, counted as killed (a hang, or tests slower than allowed):")
        lines += [f"  {name}" for name in timed_out]
    if unchecked:
        lines.append("")
        lines.append(f"{len(unchecked)} mutants were not checked (the run did not finish).")
    stale = [name for name in accepted if name not in surviving]
    if stale:
        lines.append("")
        lines.append(f"Stale entries of {ACCEPTED_FILE} (no such survivor; remove them):")
        lines += [f"  {name}" for name in stale]
    return lines, not unexplained and not unchecked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "modules", nargs="*", help="report only these modules (apikeys._cache ...); default: all"
    )
    parser.add_argument("--accepted", type=Path, default=ACCEPTED_FILE)
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    arguments = parser.parse_args(argv)
    paths, problems = modules_to_mutate()
    if arguments.modules:
        paths = [path for path in paths if module_name(path) in arguments.modules]
    try:
        accepted = parse_accepted(arguments.accepted.read_text())
    except ValueError as exc:
        problems.append(f"{arguments.accepted}: {exc}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    results = load_results(paths, arguments.mutants)
    mutated = {result.module for result in results}
    # Entries of modules not reported on this time are not stale.
    accepted = {
        name: reason for name, reason in accepted.items() if name.rsplit(".x", 1)[0] in mutated
    }
    lines, passed = report(results, accepted)
    print("\n".join(lines))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
