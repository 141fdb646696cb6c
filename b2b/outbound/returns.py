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
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from b2b import INCLUDE
from b2b.blocks import ADDRESS_COMPARED, ADDRESS_SENT, RETURNABLE, RETURNED_STUDENT, XML_NAMES, compare_sql
from b2b.context import RunContext, log_stage, one, scalar
from b2b.errors import OutboundError

log = logging.getLogger(__name__)

RETURN_FIELDS = RETURNED_STUDENT
ADDRESS_FIELDS = tuple(f for f in ADDRESS_COMPARED if f in RETURNABLE)  # town is sent with them
XSD_PATH = INCLUDE / "schemas" / "b2b_return.xsd"
#: a character XML 1.0 cannot carry (lxml and python-docx refuse it, openpyxl too): NUL and the
#: other C0 controls but tab, LF and CR; U+FFFE, U+FFFF; an unpaired surrogate
XML_UNFIT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
#: the detail of a returned field not sent because a value of its pupil XML cannot carry
NOT_SENT = "not sent"


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
    """The B2BReturn XML for these corrections, checked against its XSD. A value XML cannot
    carry is a :class:`ReturnError` naming the students (:func:`prepare` leaves them out)."""
    from lxml import etree

    unfit = [p.student_guid for p in pupils if unfit_fields(p)]
    if unfit:
        raise ReturnError(f"base {ctx.base_id}: students {', '.join(unfit)} hold a character XML cannot carry")

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


def unfit_fields(p: PendingReturn) -> list[str]:
    """The fields of a pupil's corrections whose LA value XML cannot carry (:data:`XML_UNFIT`)."""
    values = [(f, la) for f, (la, _school) in p.fields.items()] + [("address", v) for v in p.address.values()]
    return sorted({f for f, v in values if isinstance(v, str) and XML_UNFIT.search(v)})


def prepare(conn: Connection, ctx: RunContext, la_code: str, ncys: list[str] | None) -> tuple[int, bytes, list[PendingReturn]]:
    """Build this window's return message and record it (status ``built``); a rerun replaces it.

    A pupil whose correction holds a character XML cannot carry (a control character: lxml
    refused it with a ValueError that stopped the school's whole return) is not sent: its fields
    are recorded ``refused`` with a :data:`NOT_SENT` detail naming them, never the value, and
    the other pupils are sent; the pupil stays pending until the LA's value is corrected."""
    pupils: list[PendingReturn] = []
    unsent: list[PendingReturn] = []
    for p in pending(conn, ctx.base_id, ncys):
        (unsent if unfit_fields(p) else pupils).append(p)
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
                "school_value, status, detail) FROM STDIN") as copy:
            for p in pupils:
                for field, (la_value, school_value) in sorted(p.fields.items()):
                    copy.write_row((outbound_id, ctx.base_id, p.student_guid, p.person_id, field, la_value,
                                    school_value, "sent", None))
            for p in unsent:
                detail = f"{NOT_SENT}: the LA's {', '.join(unfit_fields(p))} holds a character XML cannot carry"
                for field, (la_value, school_value) in sorted(p.fields.items()):
                    copy.write_row((outbound_id, ctx.base_id, p.student_guid, p.person_id, field, la_value,
                                    school_value, "refused", detail))
    for p in unsent:  # never the value: it is a pupil's
        log.warning("base %s: student %s not returned: the LA's %s holds a character XML cannot carry",
                    ctx.base_id, p.student_guid, ", ".join(unfit_fields(p)))
    return outbound_id, body, pupils


def record_delivery(conn: Connection, ctx: RunContext, outbound_id: int, response: dict | None, error: str | None) -> dict:
    """Store the school's answer: applied or refused per student; the counts go to the task log."""
    refused = {r.get("guid"): r.get("reason", "refused") for r in (response or {}).get("refused", [])}
    with conn.transaction():
        conn.execute("UPDATE raw.outbound_file SET status = %s, response = %s, error = %s WHERE outbound_id = %s",
                     ("failed" if error else "delivered", json.dumps(response) if response else None, error,
                      outbound_id))
        if not error:
            conn.execute("UPDATE results.returned_field SET status = 'applied' WHERE outbound_id = %s "
                         "AND status = 'sent'", (outbound_id,))
            for guid, reason in refused.items():
                conn.execute("""UPDATE results.returned_field SET status = 'refused', detail = %s
                                 WHERE outbound_id = %s AND student_guid = %s AND status = 'applied'""",
                             (reason, outbound_id, guid))
        not_sent = "detail LIKE %(not_sent)s"
        pupils, fields, unsent = one(conn,
            f"""SELECT count(DISTINCT student_guid) FILTER (WHERE NOT coalesce({not_sent}, false)),
                       count(*) FILTER (WHERE NOT coalesce({not_sent}, false)),
                       count(DISTINCT student_guid) FILTER (WHERE {not_sent})
                  FROM results.returned_field WHERE outbound_id = %(id)s""",
            {"not_sent": NOT_SENT + ":%", "id": outbound_id})
        counts = {"pupils": pupils, "fields": fields, "refused": len(refused),
                  "applied": 0 if error else pupils - len(refused)}
        if unsent:
            counts["not_sent"] = unsent
        held = f"; {unsent} students not sent (a value XML cannot carry)" if unsent else ""
        if error:
            message, level = f"return to school: delivery of {pupils} students' corrections failed: {error}{held}", "error"
        else:
            message = (f"return to school: {fields} corrected fields for {pupils} students sent; "
                       f"{counts['applied']} applied, {len(refused)} refused by the school{held}")
            level = "warning" if refused or unsent else "info"
        log_stage(conn, ctx, "return_to_school", counts, message, level=level)
    return counts
