"""The validate stage reads each block's content projected in SQL to what the suites look at:
validate_blocks gives the same anomalies, invalid blocks and files in suspense on projected
content as on the whole blocks, for hostile values and malformed shapes alike."""
import json
import math
from datetime import date

from b2b.ingest import validation
from b2b.ingest.validation import _pending_blocks_sql, validate_blocks
from tests.test_validation_differential import hostile_blocks

AS_OF = date(2026, 10, 5)


def jsonable(v):
    """As stored: JSON has no NaN, and jsonb no NUL character."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, str):
        return v.replace("\u0000", "")
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    return v


MALFORMED = [("student", ["not", "an", "object"]), ("student", "text"), ("sen", {"needs": "SPLD"}),
             ("sen", {"needs": None}), ("sen", {"start_date": "2026-01-01"}), ("sen", {"needs": [1, {"type": "ASD"}]}),
             ("contacts", {"contacts": [{"relationship": "PAM", "surname": "X"}, "PAF"]}),
             ("attendance", {"marks": "//", "changes": "L"}), ("attendance", {"marks": "//", "changes": None}),
             ("attendance", {"marks": "//", "changes": [{"code": "L", "date": "2026-10-01"}, {"date": "x"}]}),
             ("attendance", {"marks": "//", "changes": []}), ("unknown_type", {"a": 1}),
             ("exclusions", {"exclusions": []}), ("address", {})]


def stored_blocks():
    blocks = [dict(b, content=jsonable(b["content"])) for seed in (1, 2) for b in hostile_blocks(seed, n=200)]
    for i, (bt, content) in enumerate(MALFORMED):
        blocks.append({"file_id": 100 + i, "ordinal": 1, "base_id": "8862001", "block_type": bt,
                       "student_guid": f"m{i}", "content": content})
    for i, b in enumerate(blocks):
        b["ordinal"] = i
    return blocks


def outcome(r):
    return (sorted((a.file_id, a.ordinal, a.rule, a.field, a.value) for a in r.anomalies), r.invalid_blocks,
            r.suspended, r.checked)


def test_projected_blocks_validate_as_the_whole_blocks(db):
    blocks = stored_blocks()
    db.execute("CREATE TEMP TABLE inbound_block (LIKE raw.inbound_block INCLUDING DEFAULTS)")
    query = _pending_blocks_sql().replace("raw.inbound_block", "inbound_block")
    cols = db.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = 'raw' "
                      "AND table_name = 'inbound_block' AND is_nullable = 'NO' AND column_default IS NULL").fetchall()
    assert {c[0] for c in cols} <= {"file_id", "ordinal", "base_id", "block_type", "student_guid", "content",
                                    "content_hash", "fingerprint", "disposition"}, cols
    with db.cursor() as cur, cur.copy("COPY inbound_block (file_id, ordinal, base_id, block_type, student_guid, "
                                      "content, disposition) FROM STDIN") as copy:
        for b in blocks:
            copy.write_row((b["file_id"], b["ordinal"], b["base_id"], b["block_type"], b["student_guid"],
                            json.dumps(b["content"]), "pending"))
    rows = db.execute(query, (sorted({b["file_id"] for b in blocks}),)).fetchall()
    projected = [dict(file_id=r[0], ordinal=r[1], base_id=r[2], block_type=r[3], student_guid=r[4],
                      content=validation._json_decoder()(r[5])) for r in rows]
    assert len(projected) == len(blocks)
    contacts = next(p for p in projected if p["block_type"] == "contacts" and p["file_id"] >= 100)
    assert contacts["content"] == {"contacts": [{"relationship": "PAM"}, "PAF"]}  # only what the suite reads
    stored = {(r[0], r[1]): r[2] for r in db.execute("SELECT file_id, ordinal, content FROM inbound_block")}
    blocks = [dict(b, content=stored[b["file_id"], b["ordinal"]]) for b in blocks]  # as jsonb gives them back
    validation._verdicts.clear()
    whole = outcome(validate_blocks(blocks, run_label="t", as_of=AS_OF))
    assert whole[0] and whole[2], "the blocks should fail rules and put files in suspense"
    assert outcome(validate_blocks(projected, run_label="t", as_of=AS_OF)) == whole
