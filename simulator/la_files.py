"""The LA's own files, as its systems would drop them for ``b2b core load`` / the nightly
``b2b__core__refresh`` DAG: its child records (with the MIS GUID links it already holds)
its address gazetteer (LLPG extract) and the adults it holds (parents and carers known to
its services: F14's carer matching).

``style="b2b"`` writes our column names; ``style="la"`` writes the headers and date format
of a typical LA case-management export plus the ``mapping.yaml`` that maps them (the format
is documented in ``b2b.ops.core_load``).
"""
from __future__ import annotations

import csv
import os
from datetime import date
from pathlib import Path

#: our field -> the header a typical LA system uses (style "la")
LA_HEADERS = {"person_id": "Person ID", "upn": "UPN", "forename": "Legal Forename", "middle_names": "Middle Names",
              "surname": "Legal Surname", "gender": "Sex", "dob": "Date of Birth", "ethnicity": "Ethnicity",
              "first_language": "First Language", "sen_status": "SEN Status", "base_id": "School DfE",
              "paon": "House", "street": "Street", "town": "Town", "postcode": "Postcode",
              "guid": "MIS GUID", "guid_base": "MIS School"}
ADULT_HEADERS = {"person_id": "Person ID", "forename": "Forename", "middle_names": "Middle Names",
                 "surname": "Surname", "gender": "Sex", "dob": "Date of Birth", "paon": "House", "street": "Street",
                 "postcode": "Postcode"}
LLPG_HEADERS = {"uprn": "UPRN", "paon": "PAO_TEXT", "saon": "SAO_TEXT", "street": "STREET_DESCRIPTOR",
                "locality": "LOCALITY", "town": "TOWN_NAME", "postcode": "POSTCODE_LOCATOR"}
MAPPING_YAML = """\
# How this LA's exports name their columns (b2b core load --mapping; see b2b/ops/core_load.py).
children:
  full_extract: true
  date_format: "%d/%m/%Y"
  columns:
{children}
  values:
    gender: {{Male: M, Female: F, Unknown: U}}
gazetteer:
  columns:
{gazetteer}
adults:
  date_format: "%d/%m/%Y"
  columns:
{adults}
  values:
    gender: {{Male: M, Female: F, Unknown: U}}
"""


def _private(path: Path) -> None:
    os.chmod(path, 0o600)


def children_rows(world) -> list[dict]:
    out = []
    for r in world.la_core():
        out.append({"person_id": r["person_id"], "upn": r.get("upn"), "forename": r.get("forename"),
                    "middle_names": r.get("middle_names"), "surname": r.get("surname"), "gender": r.get("gender"),
                    "dob": r.get("dob"), "ethnicity": r.get("ethnicity"), "first_language": r.get("first_language"),
                    "sen_status": r.get("sen_status"), "base_id": r.get("base_dfe"),
                    "paon": r.get("paon") or (None if r.get("street") else r.get("address_line1")),
                    "street": r.get("street"), "town": r.get("town"), "postcode": r.get("postcode"),
                    "guid": r.get("guid"), "guid_base": r.get("base_dfe") if r.get("guid") else None})
    return out


def gazetteer_rows(world) -> list[dict]:
    """One address per distinct (house, street, town, postcode) the LA's records use, numbered UPRNs."""
    seen: dict[tuple, dict] = {}
    for r in children_rows(world):
        if not r["postcode"]:
            continue
        key = (r["paon"], r["street"], r["town"], r["postcode"])
        if key not in seen:
            seen[key] = {"uprn": str(100_000_000_000 + len(seen) + 1), "paon": r["paon"], "saon": None,
                         "street": r["street"], "locality": None, "town": r["town"], "postcode": r["postcode"]}
    return list(seen.values())


#: share of the schools' contacts the LA holds as adults (decided by hash: the world is unchanged)
LA_ADULT_SHARE = 0.6


def adult_rows(world) -> list[dict]:
    """The adults the LA holds: about 60% of the schools' contacts (as at the world's start),
    with a date of birth the schools never send and the home address the LA last recorded;
    some LA records are behind (the family's older address) or use another name form."""
    from simulator.world import _h, _u

    seed = world.config.seed
    out: dict[str, dict] = {}
    for roll in world._base_state.students.values():
        for st in roll.values():
            for c in st.blocks.get("contacts", {}).get("contacts", []):
                cid = c["person_id"]
                if cid in out or not c.get("forename") or not c.get("surname") \
                        or _u(seed, cid, "la_adult") >= LA_ADULT_SHARE:
                    continue
                homes = sorted((a for a in c.get("addresses", []) if a.get("type") == "H"),
                               key=lambda a: str(a.get("start_date") or ""))
                # 5%: the LA still has the family's older address
                home = (homes[0] if len(homes) > 1 and _u(seed, cid, "la_old_home") < 0.05 else homes[-1]) \
                    if homes else {}
                year = 1965 + _h(seed, cid, "dob_year") % 35
                dob = date(year, 1 + _h(seed, cid, "dob_month") % 12, 1 + _h(seed, cid, "dob_day") % 28)
                forename = c["forename"]
                if _u(seed, cid, "la_upper") < 0.05:
                    forename = forename.upper()
                out[cid] = {"person_id": f"A{_h(seed, cid, 'adult_id') % 10**8:08d}", "forename": forename,
                            "middle_names": None, "surname": c["surname"],
                            "gender": c["gender"] if c.get("gender") in ("M", "F") else None, "dob": dob,
                            "paon": home.get("paon"), "street": home.get("street"), "postcode": home.get("postcode")}
    return sorted(out.values(), key=lambda r: r["person_id"])


def _write(path: Path, rows: list[dict], fields: list[str], headers: dict[str, str] | None, date_fmt: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        wr = csv.writer(fh)
        wr.writerow([(headers or {}).get(f, f) for f in fields])
        for r in rows:
            cells = []
            for f in fields:
                v = r.get(f)
                if isinstance(v, date):
                    v = v.strftime(date_fmt)
                elif f == "gender" and headers and v:
                    v = {"M": "Male", "F": "Female"}.get(v, "Unknown")
                cells.append("" if v is None else v)
            wr.writerow(cells)
    _private(path)


def write_la_files(dest: Path, world=None, *, style: str = "b2b") -> list[Path]:
    """Write ``children.csv``, ``gazetteer.csv`` and ``adults.csv`` (and ``mapping.yaml`` for
    style "la") into ``dest`` (mode 0600: they hold personal data); the paths written."""
    from b2b.ops.core_load import ADULT_FIELDS, CHILD_FIELDS, GAZETTEER_FIELDS, LINK_FIELDS

    if world is None:
        from simulator.world import World, WorldConfig

        world = World(WorldConfig.demo())
    if style not in ("b2b", "la"):
        raise ValueError("style must be 'b2b' or 'la'")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    la = style == "la"
    child_fields = [f for f in CHILD_FIELDS + LINK_FIELDS if not la or f in LA_HEADERS]
    paths = [dest / "children.csv", dest / "gazetteer.csv"]
    _write(paths[0], children_rows(world), child_fields, LA_HEADERS if la else None,
           "%d/%m/%Y" if la else "%Y-%m-%d")
    _write(paths[1], gazetteer_rows(world), list(GAZETTEER_FIELDS), LLPG_HEADERS if la else None, "%Y-%m-%d")
    adults = dest / "adults.csv"
    _write(adults, adult_rows(world), list(ADULT_FIELDS), ADULT_HEADERS if la else None,
           "%d/%m/%Y" if la else "%Y-%m-%d")
    if la:
        def cols(h: dict[str, str]) -> str:
            return "\n".join(f"    {k}: \"{v}\"" for k, v in h.items())

        (dest / "mapping.yaml").write_text(MAPPING_YAML.format(children=cols(LA_HEADERS), gazetteer=cols(LLPG_HEADERS),
                                                               adults=cols(ADULT_HEADERS)), encoding="utf-8")
        paths.append(dest / "mapping.yaml")
    paths.append(adults)
    return paths
