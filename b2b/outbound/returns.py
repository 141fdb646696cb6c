"""Return to school (F25, F28): send the LA's corrected identity data back to a school.

An import-to-school task (Changed Data, NCY group only) returns, for the base's students
in its NCY group, each F28 field (UPN, surname, forename, middle names, gender, date of
birth, address) where

* the student is linked to an LA child (``results.current_link``),
* the school's latest data still differs from the LA's value (the same comparison as the
  conflicts stage: names case-insensitive, postcodes without spaces), and
* an officer settled that conflict by keeping the LA's value (``b2b officer resolve
  --keep la``: resolution ``kept_la`` for exactly these two values) — the LA holds the
  corrected value.

Every run sends whatever is still pending, so a run that failed is made good by the
next; once the school has applied a correction its next export carries the LA's value
and the field is no longer pending (and no longer a conflict). For an address, the LA's
whole address (house, street, town, postcode) is sent. The message (``B2BReturn``,
``include/schemas/b2b_return.xsd``) is stored in ``raw.outbound_file`` and each field in
``results.returned_field``; a rerun of the window replaces both.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psycopg import Connection

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from b2b import INCLUDE
from b2b.blocks import ADDRESS_COMPARED, ADDRESS_SENT, RETURNABLE, RETURNED_STUDENT, XML_NAMES, compare_sql
from b2b.context import RunContext, log_stage, one, scalar
from b2b.errors import OutboundError

RETURN_FIELDS = RETURNED_STUDENT
ADDRESS_FIELDS = tuple(f for f in ADDRESS_COMPARED if f in RETURNABLE)  # town is sent with them
XSD_PATH = INCLUDE / "schemas" / "b2b_return.xsd"


class ReturnError(OutboundError):
    """A return message that could not be built or delivered (safe to log: no personal data)."""


@dataclass
class PendingReturn:
    student_guid: str
    person_id: str
    fields: dict        # field -> (la_value, school_value)
    address: dict       # LA address to send (empty unless an address field is returned)


def latest_sql(table: str) -> str:
    """The newest staging row per student of one base (``%(base)s``), as a CTE body: what the
    school holds now. Returns and the weekly school reports compare this with the LA."""
    return f"""SELECT DISTINCT ON (s.student_guid) s.*
                 FROM staging.{table} s JOIN raw.inbound_file f USING (file_id)
                WHERE s.base_id = %(base)s
                ORDER BY s.student_guid, f.window_order DESC, s.file_id DESC"""


def differences_sql(student_fields: Sequence[str], address_fields: Sequence[str], where: str, *,
                    address_needs_student: bool = False) -> str:
    """(student_guid, person_id, field, la_value, inc_value) of every compared field where a
    linked student's latest school value (``s``: student, ``a``: address) and the LA's (``c``)
    are both known and differ, and ``where`` holds (it sees ``s``, ``l``, ``c`` and ``v``).
    Returns (F25/F28) and the weekly school reports ask this; ``%(base)s`` is the base."""
    student_values = ", ".join(compare_sql(f, f"c.{f}", f"s.{f}") for f in student_fields)
    address_values = ", ".join(compare_sql(f, f"c.{f}", f"a.{f}") for f in address_fields)
    differ = "v.la_value IS NOT NULL AND v.inc_value IS NOT NULL AND NOT v.same"
    address_from = "s JOIN l USING (student_guid) JOIN a USING (student_guid)" if address_needs_student \
        else "a JOIN l USING (student_guid)"
    return f"""WITH s AS ({latest_sql('student')}),
                 a AS ({latest_sql('address')}),
                 l AS (SELECT base_id, student_guid, person_id FROM results.current_link WHERE base_id = %(base)s)
            SELECT s.student_guid, l.person_id, v.field, v.la_value, v.inc_value
              FROM s JOIN l USING (student_guid) JOIN core.child c ON c.person_id = l.person_id
             CROSS JOIN LATERAL (VALUES {student_values}) AS v(field, la_value, inc_value, same)
             WHERE {differ} AND {where}
            UNION ALL
            SELECT a.student_guid, l.person_id, v.field, v.la_value, v.inc_value
              FROM {address_from} JOIN core.child c ON c.person_id = l.person_id
             CROSS JOIN LATERAL (VALUES {address_values}) AS v(field, la_value, inc_value, same)
             WHERE {differ} AND {where}"""


def pending(conn: Connection, base_id: str, ncys: list[str] | None) -> list[PendingReturn]:
    """The corrections the LA holds for the base's students in the NCY group (``None``: all)."""
    kept = """EXISTS (SELECT 1 FROM results.conflict_resolution r
                       WHERE r.person_id = l.person_id AND r.field = v.field AND r.resolution = 'kept_la'
                         AND r.la_value IS NOT DISTINCT FROM v.la_value
                         AND r.incoming_value IS NOT DISTINCT FROM v.inc_value)"""
    rows = conn.execute(
        differences_sql(RETURN_FIELDS, ADDRESS_FIELDS,
                        f"(%(ncys)s::text[] IS NULL OR s.ncy = ANY(%(ncys)s::text[])) AND {kept}",
                        address_needs_student=True) + " ORDER BY 1, 3",
        {"base": base_id, "ncys": list(ncys) if ncys else None}).fetchall()
    out: dict[str, PendingReturn] = {}
    for guid, person_id, field, la_value, school_value in rows:
        p = out.setdefault(guid, PendingReturn(guid, person_id, {}, {}))
        p.fields[field] = (la_value, school_value)
    with_address = [p for p in out.values() if set(p.fields) & set(ADDRESS_FIELDS)]
    if with_address:
        la_address = {person_id: {k: v for k, v in zip(ADDRESS_SENT, values) if v is not None}
                      for person_id, *values in conn.execute(
                          f"SELECT person_id, {', '.join(ADDRESS_SENT)} FROM core.child WHERE person_id = ANY(%s)",
                          ([p.person_id for p in with_address],))}
        for p in with_address:
            p.address = la_address[p.person_id]
    return [out[g] for g in sorted(out)]


def build_message(la_code: str, ctx: RunContext, pupils: list[PendingReturn]) -> bytes:
    """The B2BReturn XML for these corrections, checked against its XSD."""
    from lxml import etree

    root = etree.Element("B2BReturn", version="1.0")
    header = etree.SubElement(root, "Header")
    for name, value in (("MessageID", f"{ctx.dag_id}:{ctx.window_end.isoformat()}"), ("LA", la_code),
                        ("DestSchool", ctx.base_id), ("Task", ctx.task_key), ("Sent", ctx.window_end.isoformat())):
        etree.SubElement(header, name).text = value
    pupils_el = etree.SubElement(root, "Pupils")
    for p in pupils:
        el = etree.SubElement(pupils_el, "Pupil")
        etree.SubElement(el, "ApplicationReference").text = p.student_guid
        for f in RETURN_FIELDS:
            if f in p.fields:
                etree.SubElement(el, XML_NAMES[f]).text = p.fields[f][0]
        if p.address:
            addr = etree.SubElement(el, "Address")
            for f in ADDRESS_SENT:
                if f in p.address:
                    etree.SubElement(addr, XML_NAMES[f]).text = p.address[f]
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    schema = etree.XMLSchema(etree.parse(str(XSD_PATH)))
    doc = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    if not schema.validate(doc):
        err = schema.error_log.last_error
        raise ReturnError(f"base {ctx.base_id}: return message does not match b2b_return.xsd "
                          f"(line {err.line}: {err.type_name})")
    return body


def prepare(conn: Connection, ctx: RunContext, la_code: str, ncys: list[str] | None) -> tuple[int, bytes, list[PendingReturn]]:
    """Build this window's return message and record it (status ``built``); a rerun replaces it."""
    pupils = pending(conn, ctx.base_id, ncys)
    body = build_message(la_code, ctx, pupils)
    with conn.transaction():
        conn.execute("DELETE FROM raw.outbound_file WHERE dag_id = %s AND window_end = %s",
                     (ctx.dag_id, ctx.window_end))
        outbound_id = scalar(conn,
            """INSERT INTO raw.outbound_file (base_id, task_key, dag_id, run_id, window_end, pupils, payload,
                                              size_bytes, sha256, status)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'built') RETURNING outbound_id""",
            (ctx.base_id, ctx.task_key, ctx.dag_id, ctx.run_id, ctx.window_end, len(pupils), body, len(body),
             hashlib.sha256(body).hexdigest()))
        with conn.cursor() as cur, cur.copy(
                "COPY results.returned_field (outbound_id, base_id, student_guid, person_id, field, la_value, "
                "school_value) FROM STDIN") as copy:
            for p in pupils:
                for field, (la_value, school_value) in sorted(p.fields.items()):
                    copy.write_row((outbound_id, ctx.base_id, p.student_guid, p.person_id, field, la_value,
                                    school_value))
    return outbound_id, body, pupils


def record_delivery(conn: Connection, ctx: RunContext, outbound_id: int, response: dict | None, error: str | None) -> dict:
    """Store the school's answer: applied or refused per student; the counts go to the task log."""
    refused = {r.get("guid"): r.get("reason", "refused") for r in (response or {}).get("refused", [])}
    with conn.transaction():
        conn.execute("UPDATE raw.outbound_file SET status = %s, response = %s, error = %s WHERE outbound_id = %s",
                     ("failed" if error else "delivered", json.dumps(response) if response else None, error,
                      outbound_id))
        if not error:
            conn.execute("UPDATE results.returned_field SET status = 'applied' WHERE outbound_id = %s",
                         (outbound_id,))
            for guid, reason in refused.items():
                conn.execute("""UPDATE results.returned_field SET status = 'refused', detail = %s
                                 WHERE outbound_id = %s AND student_guid = %s""", (reason, outbound_id, guid))
        pupils, fields = one(conn,
            "SELECT count(DISTINCT student_guid), count(*) FROM results.returned_field WHERE outbound_id = %s",
            (outbound_id,))
        counts = {"pupils": pupils, "fields": fields, "refused": len(refused),
                  "applied": 0 if error else pupils - len(refused)}
        if error:
            message, level = f"return to school: delivery of {pupils} students' corrections failed: {error}", "error"
        else:
            message = (f"return to school: {fields} corrected fields for {pupils} students sent; "
                       f"{counts['applied']} applied, {len(refused)} refused by the school")
            level = "warning" if refused else "info"
        log_stage(conn, ctx, "return_to_school", counts, message, level=level)
    return counts
