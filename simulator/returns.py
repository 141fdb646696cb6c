"""The school side of an LA return message (F25/F28): parse and check a ``B2BReturn``.

Parsed like any untrusted XML: no DTDs or entities, no network, validated against
``include/schemas/b2b_return.xsd``. Errors are :class:`SimulatorError` (HTTP 400) naming
the line, never the personal data.
"""
from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from simulator.world import SimulatorError

XSD = Path(__file__).resolve().parent.parent / "include" / "schemas" / "b2b_return.xsd"
FIELDS = {"UPN": "upn", "Surname": "surname", "Forename": "forename", "MiddleNames": "middle_names",
          "Gender": "gender", "DOB": "dob"}
ADDRESS = {"PAON": "paon", "Street": "street", "Town": "town", "Postcode": "postcode"}
_schema = None


def parse_return(body: bytes) -> tuple[dict, list[dict]]:
    """(header, pupils) of a return message; pupils are {guid, fields, address}."""
    from lxml import etree

    global _schema
    if _schema is None:
        _schema = etree.XMLSchema(etree.parse(str(XSD)))
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        doc = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        raise SimulatorError(f"return message is not well-formed XML (line {exc.lineno})") from None
    if doc.getroottree().docinfo.doctype:
        raise SimulatorError("document type declarations are not allowed")
    if not _schema.validate(doc):
        err = _schema.error_log.last_error
        raise SimulatorError(f"return message does not match b2b_return.xsd (line {err.line}: {err.type_name})")
    h = doc.find("Header")
    header = {"message_id": h.findtext("MessageID"), "dest_school": h.findtext("DestSchool"),
              "sent": datetime.fromisoformat(h.findtext("Sent"))}
    pupils = []
    for p in doc.iterfind("Pupils/Pupil"):
        fields = {FIELDS[el.tag]: el.text for el in p if el.tag in FIELDS}
        if "dob" in fields:
            fields["dob"] = date.fromisoformat(fields["dob"]).isoformat()
        addr = p.find("Address")
        address = {ADDRESS[el.tag]: el.text for el in addr} if addr is not None else {}
        pupils.append({"guid": p.findtext("ApplicationReference"), "fields": fields, "address": address})
    return header, pupils
