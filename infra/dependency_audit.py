"""`make security`'s dependency audit: pip-audit on the locks, reported for what it checked.

    python -m infra.dependency_audit [LOCK ...] [--service pypi|osv ...] [--osv-url URL]

pip-audit counts a package it could not look up ("Dependency not found on PyPI and could not
be audited") as a skip, prints "No known vulnerabilities found" and exits 0, even when it
audited nothing: on a machine whose PyPI mirror serves the package index but not PyPI's JSON
API, every package is skipped, and a service it cannot reach at all (OSV without network)
makes it crash. This wrapper runs pip-audit on each lock (`requirements.txt`, what the
Lambda package ships, and `requirements-dev.txt`), asking each service in turn until one
answers for every package, and reports per lock how many packages were audited, which are
vulnerable and which could not be audited, and why.

Exit status, the contract CI relies on:

- 1: a known vulnerability in a locked package (always fatal);
- 2: some packages could not be audited and `AUDIT_REQUIRED=1` (or `--required`) is set;
- 0: every package audited and none vulnerable; or, without AUDIT_REQUIRED, packages left
  unaudited, with a loud `WARNING: DEPENDENCY AUDIT INCOMPLETE` banner and never a claim
  that there are no vulnerabilities. CI runs on a machine that reaches the package index
  only, so it would otherwise fail every run; a machine with the internet sets
  AUDIT_REQUIRED=1.

Hand-written because pip-audit has no option that fails on unaudited packages other than
`--strict`, which also aborts at the first one and reports nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess  # runs pip-audit with fixed arguments  # nosec B404
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCKS = ("requirements.txt", "requirements-dev.txt")
SERVICES = ("pypi", "osv")
AUDIT_TIMEOUT_S = 600


@dataclass
class Vulnerable:
    name: str
    version: str
    ids: list[str]
    fixes: list[str]


@dataclass
class LockAudit:
    """What one service said about one lock."""

    lock: str
    service: str
    audited: list[str] = field(default_factory=list)
    vulnerable: list[Vulnerable] = field(default_factory=list)
    unaudited: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    """Set when the service could not be asked at all (pip-audit gave no report)."""

    @property
    def complete(self) -> bool:
        return self.error is None and not self.unaudited


def parse_report(lock: str, service: str, document: dict[str, Any]) -> LockAudit:
    """A pip-audit JSON report (`--format json`) as audited / vulnerable / unaudited."""
    audit = LockAudit(lock, service)
    for dependency in document.get("dependencies", []):
        name = str(dependency.get("name"))
        if "skip_reason" in dependency:
            audit.unaudited[name] = str(dependency["skip_reason"])
            continue
        audit.audited.append(name)
        vulns = dependency.get("vulns") or []
        if vulns:
            audit.vulnerable.append(
                Vulnerable(
                    name=name,
                    version=str(dependency.get("version")),
                    ids=[
                        " / ".join([str(vuln.get("id")), *map(str, vuln.get("aliases", []))])
                        for vuln in vulns
                    ],
                    fixes=sorted(
                        {str(fix) for vuln in vulns for fix in vuln.get("fix_versions", [])}
                    ),
                )
            )
    return audit


def run_pip_audit(lock: Path, service: str, osv_url: str | None) -> LockAudit:
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--requirement",
        str(lock),
        "--disable-pip",  # the lock is complete and hashed: audit it as it is, no resolution
        "--vulnerability-service",
        service,
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--timeout",
        "30",
        *(["--osv-url", osv_url] if osv_url and service == "osv" else []),
    ]
    try:
        completed = subprocess.run(  # noqa: S603 - our interpreter, fixed arguments  # nosec B603
            command, capture_output=True, text=True, timeout=AUDIT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return LockAudit(lock.name, service, error=f"no answer within {AUDIT_TIMEOUT_S} s")
    try:
        document = json.loads(completed.stdout)
    except json.JSONDecodeError:
        lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"pip-audit exited {completed.returncode}"
        return LockAudit(lock.name, service, error=reason[:300])
    return parse_report(lock.name, service, document)


def audit_lock(lock: Path, services: list[str], osv_url: str | None) -> list[LockAudit]:
    """Ask each service in turn; stop at the first that audits every package."""
    attempts: list[LockAudit] = []
    for service in services:
        attempt = run_pip_audit(lock, service, osv_url)
        attempts.append(attempt)
        if attempt.complete:
            break
    return attempts


def best(attempts: list[LockAudit]) -> LockAudit:
    """The attempt that audited the most packages (the first one on a tie)."""
    return max(attempts, key=lambda attempt: (len(attempt.audited), -attempts.index(attempt)))


def report(results: dict[str, list[LockAudit]], required: bool) -> int:
    """Print what was audited; return the exit status (see the module docstring)."""
    vulnerable = False
    incomplete: list[str] = []
    for lock, attempts in results.items():
        chosen = best(attempts)
        total = len(chosen.audited) + len(chosen.unaudited)
        print(
            f"{lock}: {len(chosen.audited)} of {total or '?'} packages audited "
            f"({chosen.service}), {len(chosen.vulnerable)} vulnerable, "
            f"{len(chosen.unaudited) if chosen.error is None else 'all'} not audited"
        )
        for finding in chosen.vulnerable:
            vulnerable = True
            fixes = f"; fixed in {', '.join(finding.fixes)}" if finding.fixes else ""
            print(
                f"  VULNERABLE {finding.name}=={finding.version}: {', '.join(finding.ids)}{fixes}"
            )
        if not chosen.complete:
            reasons = []
            for attempt in attempts:
                if attempt.error is not None:
                    reasons.append(f"{attempt.service}: {attempt.error}")
                elif attempt.unaudited:
                    example = next(iter(attempt.unaudited.values()))
                    reasons.append(
                        f"{attempt.service}: {len(attempt.unaudited)} skipped, e.g. {example}"
                    )
            incomplete.append(f"{lock}: " + " | ".join(reasons))
    if vulnerable:
        print("FAILED: known vulnerabilities in locked packages (update them: `make lock`)")
        return 1
    if incomplete:
        banner = "=" * 78
        print(banner, file=sys.stderr)
        print(
            "WARNING: DEPENDENCY AUDIT INCOMPLETE: no vulnerability service answered for",
            file=sys.stderr,
        )
        print("every package; what was not audited is NOT known to be free of", file=sys.stderr)
        print("vulnerabilities.", file=sys.stderr)
        for line in incomplete:
            print(f"  {line}", file=sys.stderr)
        print(
            "Run `make security` where pypi.org's JSON API or api.osv.dev is reachable, "
            "with AUDIT_REQUIRED=1 to make this fatal.",
            file=sys.stderr,
        )
        print(banner, file=sys.stderr)
        if required:
            print("FAILED: AUDIT_REQUIRED=1 and the audit is incomplete", file=sys.stderr)
            return 2
        return 0
    print("every locked package audited: no known vulnerabilities")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.dependency_audit",
        description="Audit the locked dependencies with pip-audit and say what was audited. "
        "Exit 1 on a known vulnerability; 2 when packages could not be audited and "
        "AUDIT_REQUIRED=1 (or --required); otherwise 0.",
    )
    parser.add_argument(
        "locks", nargs="*", type=Path, help=f"hashed requirement files (default: {' '.join(LOCKS)})"
    )
    parser.add_argument(
        "--service",
        action="append",
        choices=SERVICES,
        help="vulnerability service to ask, in order (default: pypi, then osv)",
    )
    parser.add_argument("--osv-url", help="OSV query endpoint (default: pip-audit's, api.osv.dev)")
    parser.add_argument(
        "--required",
        action="store_true",
        default=os.environ.get("AUDIT_REQUIRED", "") not in ("", "0"),
        help="fail (exit 2) when a package could not be audited (default: AUDIT_REQUIRED=1)",
    )
    args = parser.parse_args(argv)
    locks = args.locks or [PROJECT_ROOT / lock for lock in LOCKS]
    services = args.service or list(SERVICES)
    results = {lock.name: audit_lock(lock, services, args.osv_url) for lock in locks}
    return report(results, args.required)


if __name__ == "__main__":
    sys.exit(main())
