"""The issue's targets checked against a results file: each with its measured value, its
threshold and whether it is met."""

from __future__ import annotations

from typing import Any

from chalicelib.stream.publisher import MAX_BYTES_PER_CALL

VERDICT_RATIO = 0.8
"""floor seconds / the command's verdict_s, at least."""
RECONCILE_SHARE = 0.10
"""the reconcile function's own seconds / verdict_s, at most."""
RECONCILE_CALLS_PER_1000 = 15.0
"""the reconcile function's AWS calls per 1,000 records, at most."""
VERDICT_SIZES = (20_000, 100_000)
"""Records per resource at which the verdict targets are checked (every full size measured
when none of these is)."""
MEMORY_GROWTH = 1.2
RECORDS_PER_PUT = 475
NOT_MEASURED = "not measured"


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue, with its measured value and whether it is met; a value the
    command did not report is "not measured", and that target is missed."""
    targets: list[dict[str, Any]] = []
    full = [entry for entry in results["sizes"] if entry["mode"] == "full"]
    for entry in verdict_entries(results):
        targets += verdict_targets(entry)
    ordered = sorted(results["sizes"], key=lambda entry: entry["records_per_resource"])
    if len(ordered) >= 2:
        small, large = ordered[0], ordered[-1]
        growth = large["pipeline"]["memory_mb"]["ingest_peak"] / max(
            small["pipeline"]["memory_mb"]["ingest_peak"], 1e-9
        )
        targets.append(
            {
                "name": f"ingest peak memory at {large['records_per_resource']:,} <= "
                f"{MEMORY_GROWTH} x at {small['records_per_resource']:,}",
                "value": round(growth, 3),
                "threshold": MEMORY_GROWTH,
                "met": growth <= MEMORY_GROWTH,
            }
        )
    put_calls = sum(entry["pipeline"]["aws"]["ingest"]["put_records"]["calls"] for entry in ordered)
    put_records = sum(
        entry["pipeline"]["aws"]["ingest"]["put_records"]["records"] for entry in ordered
    )
    max_bytes = max(
        (entry["pipeline"]["aws"]["ingest"]["put_records"]["max_bytes"] for entry in ordered),
        default=0,
    )
    average = put_records / put_calls if put_calls else 0.0
    targets.append(
        {
            "name": f"records per PutRecords call >= {RECORDS_PER_PUT} on average",
            "value": round(average, 1),
            "threshold": RECORDS_PER_PUT,
            "met": average >= RECORDS_PER_PUT,
        }
    )
    targets.append(
        {
            "name": "no PutRecords call over 5 MiB",
            "value": max_bytes,
            "threshold": MAX_BYTES_PER_CALL,
            "met": max_bytes <= MAX_BYTES_PER_CALL,
        }
    )
    for entry in full:
        second = entry["second_run"]
        published = sum(int(c["published"]) for c in second["entities"].values())
        written = sum(sum(c["written"].values()) for c in second["entities"].values())
        unchanged = sum(int(c.get("unchanged", 0)) for c in second["entities"].values())
        fetched = sum(int(c["fetched"]) for c in second["entities"].values())
        forbidden = data_writes(second)
        targets.append(
            {
                "name": f"unchanged re-run at {entry['records_per_resource']:,}: 0 published, "
                "0 written, every record unchanged, no write to a data table or the stream",
                "value": {
                    "published": published,
                    "written": written,
                    "unchanged": unchanged,
                    "fetched": fetched,
                    "data_writes": forbidden,
                },
                "threshold": {
                    "published": 0,
                    "written": 0,
                    "unchanged": "= fetched",
                    "data_writes": [],
                },
                "met": published == 0
                and written == 0
                and unchanged == fetched > 0
                and not forbidden
                and second["status"] == "succeeded",
            }
        )
    runs_ok = all(entry["pipeline"]["status"] == "succeeded" for entry in ordered) and all(
        entry["command"]["status"] == "succeeded" for entry in full if entry.get("command")
    )
    targets.append(
        {
            "name": "every run succeeded, the user's command and the harness "
            "(fetched = stored + quarantined)",
            "value": runs_ok,
            "threshold": True,
            "met": runs_ok,
        }
    )
    fanout = results.get("fanout") or {}
    runs = fanout.get("runs", [])
    if runs:
        targets.append(
            {
                "name": "fan-out: same stored result whatever the number of workers",
                "value": fanout["identical"],
                "threshold": True,
                "met": fanout["identical"] and all(run["status"] == "succeeded" for run in runs),
            }
        )
    if len(runs) >= 2:
        fewest = min(runs, key=lambda run: run["workers"])
        most = max(runs, key=lambda run: run["workers"])
        targets.append(
            {
                "name": f"fan-out: ingest time with {most['workers']} workers < with "
                f"{fewest['workers']}",
                "value": {str(run["workers"]): run["ingest_seconds"] for run in runs},
                "threshold": "lower with more workers",
                "met": most["ingest_seconds"] < fewest["ingest_seconds"],
            }
        )
    return targets


def _target(name: str, value: Any, threshold: Any, met: bool | None) -> dict[str, Any]:
    """met None: the value is not measured, so the target is missed."""
    return {
        "name": name,
        "value": NOT_MEASURED if met is None else value,
        "threshold": threshold,
        "met": bool(met),
    }


def verdict_entries(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The sizes whose verdict is checked: those of `VERDICT_SIZES` that were run end to end,
    else every size run end to end (a smoke run checks its own)."""
    full = [entry for entry in results["sizes"] if entry["mode"] == "full"]
    return [e for e in full if e["records_per_resource"] in VERDICT_SIZES] or full


def verdict_targets(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The user's command at one size: floor / verdict_s, the reconcile function's share of
    verdict_s and its AWS calls per 1,000 records."""
    size = f"{entry['records_per_resource']:,}"
    command = entry.get("command") or {}
    ratio = entry.get("verdict_ratio")
    share = command.get("reconcile_share")
    calls = command.get("reconcile_calls_per_1000")
    succeeded = command.get("status") == "succeeded"
    return [
        _target(
            f"time to verdict at {size}: floor s / verdict_s >= {VERDICT_RATIO}",
            ratio,
            VERDICT_RATIO,
            None if ratio is None else succeeded and ratio >= VERDICT_RATIO,
        ),
        _target(
            f"reconciliation at {size}: reconcile_s / verdict_s <= {RECONCILE_SHARE:.0%}",
            share,
            RECONCILE_SHARE,
            None if share is None else succeeded and share <= RECONCILE_SHARE,
        ),
        _target(
            f"reconciliation at {size}: AWS calls per 1,000 records <= "
            f"{RECONCILE_CALLS_PER_1000:g}",
            calls,
            RECONCILE_CALLS_PER_1000,
            None if calls is None else succeeded and calls <= RECONCILE_CALLS_PER_1000,
        ),
    ]


DATA_WRITE_OPERATIONS = frozenset(
    {"PutItem", "BatchWriteItem", "UpdateItem", "DeleteItem", "TransactWriteItems"}
)


def data_writes(run: dict[str, Any]) -> list[str]:
    """Calls of a run that publish to the stream or write to a data table (not bookkeeping:
    the run manifest and the page ledger may be written by any run)."""
    data_tables = set(run.get("data_tables", []))
    found: list[str] = []
    for side, counts in run["aws"].items():
        for name, count in counts.get("calls", {}).items():
            if name in ("kinesis.PutRecords", "kinesis.PutRecord") and count:
                found.append(f"{side}: {name} x{count}")
        for name, count in counts.get("dynamodb_tables", {}).items():
            operation, _, table = name.partition(" ")
            if operation in DATA_WRITE_OPERATIONS and table in data_tables and count:
                found.append(f"{side}: dynamodb.{name} x{count}")
    return found
