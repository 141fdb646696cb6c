"""One exception tree for the whole project.

Every error the pipeline raises on purpose is a :class:`B2BError` carrying, where known,
the base (DfE number), the file (``raw.inbound_file.file_id`` or a path) and the record
(a pupil's position, a CSV row, a catalogue task) — never a personal value or a secret.
``retryable`` tells the Airflow operators, in one place (``b2b_operators.base``), whether
a retry can help: transient failures (a school's server unavailable, a dropped
connection) are retried; everything else (bad credentials, a bad catalogue, a bad file)
fails the task at once with ``AirflowFailException``.

Each stage package raises its own subclass, as dlt's extract / normalize / load do.
"""
from __future__ import annotations


class B2BError(Exception):
    """Base of every error the project raises on purpose."""

    retryable = False

    def __init__(self, message: str, *, base: str | None = None, file: object | None = None,
                 record: object | None = None) -> None:
        self.message = message
        self.base = base
        self.file = file
        self.record = record
        super().__init__(message)

    def where(self) -> str:
        parts = []
        if self.base:
            parts.append(f"base {self.base}")
        if self.file is not None:
            parts.append(f"file {self.file}")
        if self.record is not None:
            parts.append(f"record {self.record}")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message


# ------------------------------------------------------------------ config
class ConfigError(B2BError):
    """The catalogue or a setting is wrong (``b2b.config``)."""


# ------------------------------------------------------------------ ingest
class IngestError(B2BError):
    """A message or file could not be taken in (``b2b.ingest``)."""


class ValidationSetupError(IngestError):
    """The validation itself cannot run: an expectation suite is missing or malformed."""


# ------------------------------------------------------------------ sources (schools' MIS)
class SourceError(B2BError):
    """Talking to a school's MIS failed (hooks)."""


class SourceAuthError(SourceError):
    """The school's credentials were refused or are incomplete: a retry cannot help."""


class SourceRequestError(SourceError):
    """The school's MIS refused the request (a 4xx other than auth/429) or broke the protocol."""


class SourceLimitError(SourceError):
    """A message broke a cap (size, pages): refused, never read whole."""


class SourceUnavailableError(SourceError):
    """The school's MIS could not be reached or kept failing (5xx, 429, network): transient."""

    retryable = True


class SourceDeadlineError(SourceUnavailableError):
    """A message did not arrive within its deadline (a server trickling bytes)."""


# ------------------------------------------------------------------ matching / reconcile / ops / outbound
class MatchingError(B2BError):
    """The matcher cannot decide on this input (``b2b.matching``, ``b2b.reconcile``)."""


class OpsError(B2BError):
    """An officer or maintenance action cannot be applied (``b2b.ops``)."""


class RunLeaseError(OpsError):
    """Another run of the same base held it for longer than a run may wait: transient."""

    retryable = True


class OutboundError(B2BError):
    """A message or report to a school could not be built or delivered (``b2b.outbound``)."""

    retryable = True


class DisabledError(B2BError):
    """The base is switched off (F40): its DAGs refuse to run."""
