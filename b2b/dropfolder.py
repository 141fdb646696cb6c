"""Drop folders (the LA's inbound/core, the manual-import inbound/xml/<DfE>): a processed file
is moved aside, private (0600 in a 0700 folder), with the reason beside it when it was refused."""
from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path


def move_aside(path: Path, folder: Path, reason: str | None = None) -> Path:
    """Move ``path`` into ``folder`` under a time-stamped name; write ``<name>.reason.txt`` when
    a reason is given (files in suspense). Returns the new path."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = folder / f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}_{path.name}"
    shutil.move(str(path), dest)
    dest.chmod(0o600)
    if reason is not None:
        note = dest.with_name(dest.name + ".reason.txt")
        note.write_text(reason + "\n", encoding="utf-8")
        note.chmod(0o600)
    return dest
