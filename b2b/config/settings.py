"""The LA's settings (System Defaults), typed and resolved once.

One :class:`Settings` object is read from the catalogue's ``la:`` section (and, for the
deadline and caps, from ``B2B_*`` environment variables), then passed to every stage, the
matcher and the maintenance tasks. Nothing else reads these values.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

MATCHERS = ("weights", "legacy")
#: issue 15: one Airflow task per stage, or one task per run (every stage still logged on its own)
GRANULARITIES = ("stage", "run")
#: F44: one retention (days) per kind of data; see docs/data-protection.md
RETENTION_FIELDS = ("file_retention_days", "block_retention_days", "staging_retention_days",
                    "outbound_retention_days", "suspense_retention_days", "report_retention_days")


@dataclass(frozen=True)
class Settings:
    """The LA's System Defaults that the pipeline honours (see docs/catalogue.md)."""

    b2bhcache: bool = True        # F7/F15: hash cache on
    guidmatch: bool = True        # F16: GUID matching on
    # issue 14: the school the LA holds for a child (core.child.base_id) is matching evidence
    # (b2b.matching.MatchConfig.school_evidence); off where the LA's school field is not kept
    school_evidence: bool = True
    b2b_s_age: int = 18           # F13: unmatched students older than this are hidden
    carer_min: int = 16           # F14: minimum age at which a child can be matched as a carer
    matcher: str = "weights"      # "weights" (b2b.matching) or "legacy" (the vendor rule)
    file_retention_days: int = 90  # F18/F44: stored message payloads are purged after this
    # F44 retention per kind of data (days), enforced by Delete Files (b2b.ops.maintenance)
    block_retention_days: int = 90      # parsed blocks (raw.inbound_block.content) once superseded
    staging_retention_days: int = 365   # staging rows of superseded windows
    outbound_retention_days: int = 90   # messages sent back to schools (raw.outbound_file.payload)
    suspense_retention_days: int = 30   # suspense files once resolved (and suspense/ folder copies)
    report_retention_days: int = 90     # validation reports (HTML) and anomalies' offending values
    # per-message deadline and caps (bad input never hangs a run)
    message_deadline_s: float = 300.0      # one message (all its pages) must arrive within this
    max_message_bytes: int = 50 * 1024 * 1024  # a larger body is refused
    max_pages: int = 1000                  # SIMS Primary pages followed per data group
    # issue 15: "run" = one Airflow task per export run (each stage still logged on its own), "stage" =
    # one task per stage; run by default: Airflow's cost per task is paid once per run (bench_scheduler)
    task_granularity: str = "run"

    def __post_init__(self) -> None:
        if self.matcher not in MATCHERS:
            raise ValueError(f"LA setting MATCHER must be one of {', '.join(MATCHERS)}, not {self.matcher!r}")
        if self.task_granularity not in GRANULARITIES:
            raise ValueError(f"LA setting TASK_GRANULARITY must be one of {', '.join(GRANULARITIES)}, "
                             f"not {self.task_granularity!r}")
        for name in ("b2b_s_age", "carer_min", "max_message_bytes", "max_pages", *RETENTION_FIELDS):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"LA setting {name.upper()} must not be negative")

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> Settings:
        """Settings from a mapping (the catalogue's ``la:`` section, a DAG's params); unknown
        keys are ignored, known ones typed."""
        values = dict(values or {})
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            key = key.lower()
            if key in known and value is not None:
                default: Any = known[key].default
                kwargs[key] = _bool(value) if isinstance(default, bool) else type(default)(value)
        return cls(**kwargs)

    @classmethod
    def from_env(cls, base: Settings | None = None, env: dict[str, str] | None = None) -> Settings:
        """Override the deadline and caps from ``B2B_MESSAGE_DEADLINE_S``, ``B2B_MAX_MESSAGE_BYTES``
        and ``B2B_MAX_PAGES`` (operators' knobs, not LA policy)."""
        source: Mapping[str, str] = os.environ if env is None else env
        base = base or cls()
        over: dict[str, Any] = {}
        for name in ("message_deadline_s", "max_message_bytes", "max_pages"):
            raw = source.get(f"B2B_{name.upper()}")
            if raw:
                over[name] = type(getattr(base, name))(raw)
        return replace(base, **over) if over else base

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
