"""Write the SIMS 7 B2B message (docs/protocol.md; include/schemas/b2b_message.xsd)."""
from __future__ import annotations

import io
import uuid
from datetime import datetime

SPECIAL = {"upn": "UPN", "dob": "DOB", "ncy": "NCY", "eal": "EAL", "sen_status": "SENStatus",
           "paon": "PAON", "saon": "SAON"}
BLOCK_ELEMENTS = [("student", "StudentCore"), ("address", "Address"), ("contacts", "Contacts"), ("sen", "SEN"),
                  ("exclusions", "Exclusions"), ("attendance", "Attendance"), ("attainment", "Attainment")]
LIST_ITEMS = {"contacts": "Contact", "addresses": "Address", "telephones": "Telephone", "emails": "Email",
              "needs": "Need", "exclusions": "Exclusion", "results": "Result"}
LIST_CONTAINERS = {"contacts": "Contacts", "addresses": "Addresses", "telephones": "Telephones", "emails": "Emails",
                   "needs": "Needs", "exclusions": "Exclusions", "results": "Results"}

# Element order inside each block: the XSD is a sequence in exactly this order.
ORDER = {
    "student": ["upn", "surname", "forename", "middle_names", "preferred_surname", "preferred_forename", "dob",
                "gender", "ethnicity", "first_language", "home_language", "religion", "ncy", "reg_group",
                "enrol_status", "start_date", "end_date", "eal", "gifted_talented", "service_child", "traveller",
                "connexions_assent", "looked_after", "sen_status"],
    "address": ["paon", "saon", "street", "locality", "town", "county", "postcode", "start_date"],
    "contact": ["person_id", "title", "forename", "surname", "gender", "relationship", "parental_responsibility",
                "priority", "is_staff", "addresses", "telephones", "emails"],
    "contact_address": ["type", "paon", "street", "town", "postcode", "start_date"],
    "telephone": ["type", "number", "primary", "main"],
    "email": ["type", "address", "primary", "main"],
    "sen": ["start_date", "needs"],
    "need": ["type", "ranking"],
    "exclusion": ["category", "start_date", "end_date", "reason", "term", "academic_year", "sessions"],
    "attendance": ["academic_year", "start_date", "marks"],
    "result": ["hierarchy", "aspect", "result", "result_date"],
}
ITEM_ORDER = {"contacts": "contact", "addresses": "contact_address", "telephones": "telephone", "emails": "email",
              "needs": "need", "exclusions": "exclusion", "results": "result"}


def xml_name(key: str) -> str:
    return SPECIAL.get(key) or "".join(p.capitalize() for p in key.split("_"))


def _text(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _write_fields(xf, content: dict, order: list[str]):
    from lxml import etree

    for key in order:
        v = content.get(key)
        if v is None:
            continue
        if key in LIST_ITEMS:
            with xf.element(LIST_CONTAINERS[key]):
                for item in v:
                    with xf.element(LIST_ITEMS[key]):
                        _write_fields(xf, item, ORDER[ITEM_ORDER[key]])
            continue
        el = etree.Element(xml_name(key))
        el.text = _text(v)
        xf.write(el)


def write_message(world, base, data_filter: str, since: datetime | None, until: datetime, pupils) -> bytes:
    from lxml import etree

    buf = io.BytesIO()
    msg_id = uuid.uuid5(uuid.NAMESPACE_URL, f"b2b:{world.config.seed}:{base.dfe}:{data_filter}:{since}:{until}")
    with etree.xmlfile(buf, encoding="UTF-8") as xf:
        xf.write_declaration()
        with xf.element("B2BMessage", version="1.0"):
            with xf.element("Header"):
                head = [("MessageID", str(msg_id)), ("MessageType", "B2B_EXPORT"), ("DataFilter", data_filter)]
                for tag, val in head:
                    el = etree.Element(tag)
                    el.text = val
                    xf.write(el)
                with xf.element("SourceSchool"):
                    for tag, val in (("LEA", base.dfe[:3]), ("Estab", base.dfe[3:]), ("SchoolName", base.name)):
                        el = etree.Element(tag)
                        el.text = val
                        xf.write(el)
                tail = [("DestLEA", base.dfe[:3])]
                if since is not None:
                    tail.append(("WindowStart", since.isoformat()))
                tail += [("WindowEnd", until.isoformat()), ("DateTime", until.isoformat()), ("SupplierID", "SIMS")]
                for tag, val in tail:
                    el = etree.Element(tag)
                    el.text = val
                    xf.write(el)
            with xf.element("Pupils"):
                for guid, blocks in pupils:
                    with xf.element("Pupil"):
                        el = etree.Element("ApplicationReference")
                        el.text = guid
                        xf.write(el)
                        for btype, tag in BLOCK_ELEMENTS:
                            content = blocks.get(btype)
                            if content is None:
                                continue
                            with xf.element(tag):
                                if btype == "contacts":
                                    for item in content.get("contacts", []):
                                        with xf.element("Contact"):
                                            _write_fields(xf, item, ORDER["contact"])
                                elif btype == "exclusions":
                                    for item in content.get("exclusions", []):
                                        with xf.element("Exclusion"):
                                            _write_fields(xf, item, ORDER["exclusion"])
                                elif btype == "attainment":
                                    _write_fields(xf, content, ["results"])
                                else:
                                    _write_fields(xf, content, ORDER[btype])
    return buf.getvalue()
