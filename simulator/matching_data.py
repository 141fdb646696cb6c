"""A matching benchmark dataset with known truth: the simulated LA's school records and
LA child records, plus the traps matching must survive.

Starts from a generated :class:`~simulator.world.World` (households with siblings and
twins; an LA core with nicknames, surname typos, DOB errors, moves, missing UPNs and
capitalised surnames, and children the LA has never seen) and adds, deterministically:

* ``sibling_upn``: the school typed a sibling's (often a twin's) UPN;
* ``temp_upn``: the LA still holds the temporary UPN the school has since replaced;
* ``namesake``: another LA child with the same name and date of birth lives elsewhere;
* ``namesake_unknown``: the LA has never seen this child, but holds a namesake with the same
  date of birth elsewhere (linking it would be a safeguarding incident);
  both (and ``namesake_family``) are planted as often as the name is common
  (:func:`_name_commonness`): common names collide more often, as in real populations;
* ``double_barrel``: the school uses a double-barrelled surname the LA holds in part;
* ``school_dob_typo``: the school's DOB has one digit wrong;
* ``keyboard_slip``: the school's forename has one letter replaced by a neighbouring key
  ("Ben" -> "Bwn"), sometimes two ("Jill" -> "Jgll" is one);
* ``transposition``: two neighbouring letters of the school's forename swapped ("Ben" -> "Bne");
* ``moved_upn``: the family moved (new postcode and address in another district), the UPN agrees;
* ``surname_change``: the school uses a new surname (marriage, adoption), the UPN agrees;
* ``unknown_twin``: the school has a twin the LA has never seen: same surname, DOB and
  address, a forename often close to the known twin's ("Jack"/"Jake", "Eva"/"Ava"), carrying
  its own UPN, none, or (typed in error) its twin's. Linking it would be a false link.
* ``school_dob_swap``: the school's DOB has day and month swapped;
* ``missing_address``: the school sends no postcode or address line;
* ``bad_encoding``: the child's name has an accent (the LA holds "Renée"); the school's file was
  decoded as Windows-1252 ("RenÃ©e");
* ``unknown_twin_alone``: as ``unknown_twin``, but the twin is on another school's roll, so no
  batch sees both twins (the known twin's school sends its own record as usual).
* ``names_swapped``: the school entered the forename as the surname and the surname as the
  forename ("Jones Amelia");
* ``postcode_typo``: the school's postcode has two neighbouring characters transposed
  ("CT1 2AB" -> "CT1 2BA");
* ``school_dob_missing``: the school sends no DOB.

The new kinds draw from their own hashes (``_u``), after the earlier ones, so the records the
earlier kinds picked are unchanged.

Every incoming record gets a ``kind`` (the trap, or the noise the simulator gave it) so a
benchmark can count false links by kind.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime

INJECTED = (("sibling_upn", 0.006), ("temp_upn", 0.005), ("namesake", 0.004), ("namesake_unknown", 0.003),
            ("double_barrel", 0.004), ("school_dob_typo", 0.004),
            # issue 14: typed forenames, moves and name changes with an agreeing UPN, unknown twins
            ("keyboard_slip", 0.006), ("transposition", 0.005), ("moved_upn", 0.01), ("surname_change", 0.003),
            ("unknown_twin", 0.004),
            # more of real data's noise: the school's DOB day and month swapped, no address at the
            # school, a name mangled by a bad encoding, a twin the LA does not know at another school
            ("school_dob_swap", 0.003), ("missing_address", 0.004), ("bad_encoding", 0.003),
            ("unknown_twin_alone", 0.002),
            # issue 14 (the queue): a family unknown to the LA whose namesakes — the same surname,
            # forenames and DOBs — live together elsewhere in the LA (the household rule's trap)
            ("namesake_family", 0.0005),
            # data entry slips with no identifier to help: forename and surname in each other's
            # field, two postcode characters transposed, no DOB at the school
            ("names_swapped", 0.002), ("postcode_typo", 0.003), ("school_dob_missing", 0.002))
#: a character as a UTF-8 file read as Windows-1252 shows it (the school held "Renée", the LA "Renée")
MOJIBAKE = {"e": "é", "a": "á", "o": "ö", "i": "ï", "u": "ü"}
#: letters next to each other on a UK keyboard
KEYBOARD = {
    "q": "wa", "w": "qeas", "e": "wrds", "r": "etdf", "t": "ryfg", "y": "tugh", "u": "yihj", "i": "uojk",
    "o": "ipkl", "p": "ol", "a": "qwsz", "s": "awedxz", "d": "serfcx", "f": "drtgvc", "g": "ftyhbv",
    "h": "gyujnb", "j": "huikmn", "k": "jiolm", "l": "kop", "z": "asx", "x": "zsdc", "c": "xdfv", "v": "cfgb",
    "b": "vghn", "n": "bhjm", "m": "njk"}
#: forenames twins are given that are close to each other (the hardest unknown twins)
TWIN_NAMES = {"Jack": "Jake", "Eva": "Ava", "Ella": "Ellie", "Leo": "Leon", "Mia": "Maya", "Isla": "Isha",
              "Lily": "Lola", "Amy": "Ami", "Jayden": "Jaden", "Evie": "Evan", "Noah": "Nora", "Finn": "Fin",
              "Ruby": "Rory", "Aaron": "Aron", "Emma": "Emmy", "Olly": "Ollie", "Theo": "Thea", "Max": "Maxi"}
OTHER_TWIN = ["Harvey", "Poppy", "Oscar", "Freya", "Alfie", "Daisy", "Arthur", "Rosie", "George", "Matilda"]


def _u(*parts) -> float:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big") / 2 ** 64


def match_dataset(n_incoming: int = 20000, n_core: int | None = None, seed: int = 11, schools: int | None = None):
    """(core DataFrame, incoming DataFrame, truth {incoming_id: person_id|None}, kinds {incoming_id: kind})."""
    import pandas as pd
    from stdnum.gb.upn import calc_check_digit

    from simulator.world import World, WorldConfig

    schools = schools or max(5, n_incoming // 400)
    cfg = WorldConfig.generated(schools, n_incoming, seed=seed)
    extra_la = max(0, (n_core or 0) - int(n_incoming * 0.97))
    cfg = replace(cfg, la_only_children=max(cfg.la_only_children, extra_la), entry_error_rate=0.0)
    world = World(cfg)
    st = world.state(datetime(2026, 10, 5, 17, tzinfo=UTC))
    rows = []
    for dfe, roll in st.students.items():
        for guid, s in roll.items():
            c, a = s.blocks["student"], s.blocks["address"]
            rows.append({"incoming_id": f"{dfe}:{guid}", "base_id": dfe, "upn": c["upn"], "guid": guid,
                         "forename": c["forename"], "middle_names": c["middle_names"], "surname": c["surname"],
                         "gender": c["gender"], "dob": c["dob"], "postcode": a["postcode"],
                         "address_line1": f"{a['paon']} {a['street']}"})
    inc = pd.DataFrame(rows)
    _families_move_together(world, inc, seed)
    core = pd.DataFrame(world.la_core())
    core["guid"] = None  # first-time matching: no GUID links yet, demographics and UPN only
    core["base_id"] = core["base_dfe"]  # the school the LA holds for the child (made stale below)
    core = core[["person_id", "upn", "guid", "forename", "middle_names", "surname", "gender", "dob", "postcode",
                 "address_line1", "base_id"]].copy()
    core["dob"] = core["dob"].astype(str)
    truth = {f"{d}:{g}": p for (d, g), p in world.truth().items()}
    kinds: dict[str, str] = {}

    core_idx = {p: i for i, p in enumerate(core["person_id"])}
    commonness = _name_commonness(core, inc)
    bases = set(inc["base_id"])
    family = inc.groupby(["base_id", "surname", "postcode"])["incoming_id"].apply(list).to_dict()
    new_core = []
    extra_inc: list[dict] = []
    next_pid = len(core) + 1_000_000
    for k, r in inc.iterrows():
        iid = r["incoming_id"]
        u = _u(seed, iid, "trap")
        acc = 0.0
        trap = None
        for name, share in INJECTED:
            acc += share
            if u < acc:
                trap = name
                break
        pid = truth.get(iid)
        if kinds.get(iid) == "namesake_family":  # a brother or sister of a namesake family already
            continue
        if trap is None or (pid is None and trap != "namesake_unknown"):
            continue
        # a namesake is planted as often as the name is common (see _name_commonness)
        if trap in ("namesake", "namesake_unknown") and _u(seed, iid, "namesake-freq") >= min(1.0, commonness[iid]):
            continue
        if trap == "sibling_upn":
            sibs = [x for x in family[(r["base_id"], r["surname"], r["postcode"])] if x != iid]
            if not sibs:
                continue
            sib = inc.loc[inc["incoming_id"] == sibs[0]].iloc[0]
            inc.at[k, "upn"] = sib["upn"]
        elif trap == "temp_upn":
            if pid is None or not r["upn"] or not r["upn"][-1].isdigit():
                continue
            body = r["upn"][1:11] + "9" + "ABCDEFGHJKLMNPQRTUVWXYZ"[int(_u(iid, "t") * 23)]
            core.at[core_idx[pid], "upn"] = calc_check_digit(body) + body
        elif trap in ("namesake", "namesake_unknown"):
            next_pid += 1
            la_upn = f"886{int(_u(iid, 'e') * 9000) + 1000:04d}24{int(_u(iid, 's') * 900) + 100:03d}"
            new_core.append({"person_id": f"N{next_pid}", "upn": calc_check_digit(la_upn) + la_upn, "guid": None,
                             "forename": r["forename"], "middle_names": None, "surname": r["surname"],
                             "gender": r["gender"], "dob": r["dob"], "postcode": "ME15 6QX",
                             "address_line1": "7 Elsewhere Road"})
            if trap == "namesake_unknown":
                if pid is not None:
                    core.at[core_idx[pid], "person_id"] = f"GONE{pid}"  # the LA never knew this child
                    core_idx[f"GONE{pid}"] = core_idx.pop(pid)
                    truth[iid] = None
        elif trap == "double_barrel":
            inc.at[k, "surname"] = f"{r['surname']}-Whitfield"
        elif trap in ("keyboard_slip", "transposition"):
            name = r["forename"] or ""
            if len(name) < 3:
                continue
            inc.at[k, "forename"] = _slip(name, iid, trap)
        elif trap == "moved_upn":
            if pid is None or not r["upn"] or core.at[core_idx[pid], "upn"] != r["upn"]:
                continue
            new_pc = f"TN{int(_u(iid, 'm') * 30) + 1} {int(_u(iid, 'n') * 9) + 1}AB"
            new_line = f"{int(_u(iid, 'h') * 90) + 1} Newhouse Lane"
            # the household moves together (its siblings at this school get the new home too)
            home = inc.index[inc["incoming_id"].isin(family[(r["base_id"], r["surname"], r["postcode"])])]
            inc.loc[home, "postcode"] = new_pc
            inc.loc[home, "address_line1"] = new_line
        elif trap == "namesake_family":
            # the LA has never seen this family (brothers and sisters at this school, who moved in),
            # but holds another family with the same surname, forenames and DOBs at one address:
            # the trap a household rule must survive (a coincidence squared: far rarer in life)
            members = family[(r["base_id"], r["surname"], r["postcode"])]
            if len(members) < 2 or any(kinds.get(m) for m in members):
                continue
            # each brother's or sister's namesake is a coincidence as likely as the name is common
            together = 1.0
            for m in members:
                together *= min(1.0, commonness[m])
            if _u(seed, iid, "namesake-family-freq") >= together:
                continue
            for m in members:
                mr = inc.loc[inc["incoming_id"] == m].iloc[0]
                next_pid += 1
                la_upn = f"886{int(_u(m, 'fe') * 9000) + 1000:04d}24{int(_u(m, 'fs') * 900) + 100:03d}"
                new_core.append({"person_id": f"N{next_pid}", "upn": calc_check_digit(la_upn) + la_upn, "guid": None,
                                 "forename": mr["forename"], "middle_names": None, "surname": mr["surname"],
                                 "gender": mr["gender"], "dob": mr["dob"], "postcode": "ME16 8ZZ",
                                 "address_line1": f"{int(_u(iid, 'nf') * 90) + 1} Faraway Close"})
                mp = truth.get(m)
                if mp is not None:
                    core.at[core_idx[mp], "person_id"] = f"GONE{mp}"
                    core_idx[f"GONE{mp}"] = core_idx.pop(mp)
                    truth[m] = None
                kinds[m] = "namesake_family"
            continue
        elif trap == "surname_change":
            if pid is None or not r["upn"] or core.at[core_idx[pid], "upn"] != r["upn"]:
                continue
            inc.at[k, "surname"] = ["Okafor", "Whitlock", "Pemberton", "Achterberg", "Quayle"][int(_u(iid, "sc") * 5)]
        elif trap == "unknown_twin":
            name = r["forename"] or ""
            near = TWIN_NAMES.get(name) or {v: k for k, v in TWIN_NAMES.items()}.get(name)
            if near is None and _u(iid, "tn") < 0.5:
                near = _slip(name, iid, "keyboard_slip") if len(name) >= 4 else None
            twin_name = near or OTHER_TWIN[int(_u(iid, "to") * len(OTHER_TWIN))]
            v = _u(iid, "tu")
            body = f"886{int(_u(iid, 'tb') * 9000) + 1000:04d}25{int(_u(iid, 'tc') * 900) + 100:03d}"
            twin_upn = calc_check_digit(body) + body if v < 0.5 else None if v < 0.75 else r["upn"]
            tid = f"{iid}-twin"
            extra_inc.append(dict(r, incoming_id=tid, guid=f"{r['guid']}-twin", forename=twin_name, upn=twin_upn,
                                  middle_names=None))
            truth[tid] = None
            kinds[tid] = "unknown_twin"
            continue
        elif trap == "school_dob_swap":
            d = r["dob"]
            if int(d[8:10]) > 12 or d[8:10] == d[5:7]:
                continue
            inc.at[k, "dob"] = f"{d[:4]}-{d[8:10]}-{d[5:7]}"
        elif trap == "missing_address":
            inc.at[k, "postcode"] = None
            inc.at[k, "address_line1"] = None
        elif trap == "bad_encoding":
            name = r["forename"] or ""
            pos = [j for j, ch in enumerate(name) if j and ch in MOJIBAKE]
            if not pos or core.at[core_idx[pid], "forename"] != name:
                continue
            j = pos[int(_u(iid, "enc") * len(pos))]
            accented = name[:j] + MOJIBAKE[name[j]] + name[j + 1:]
            core.at[core_idx[pid], "forename"] = accented
            inc.at[k, "forename"] = accented.encode("utf-8").decode("cp1252")
        elif trap == "unknown_twin_alone":
            name = r["forename"] or ""
            near = TWIN_NAMES.get(name) or {v: k for k, v in TWIN_NAMES.items()}.get(name)
            if near is None:
                near = _slip(name, iid, "keyboard_slip") if len(name) >= 4 and _u(iid, "an") < 0.5 else \
                    OTHER_TWIN[int(_u(iid, "ao") * len(OTHER_TWIN))]
            others = sorted(set(bases) - {r["base_id"]})
            household = set(inc.loc[inc["incoming_id"].isin(family[(r["base_id"], r["surname"], r["postcode"])]),
                                    "forename"])
            if not others or near in household:  # parents do not give two children one name
                continue
            tid = f"{iid}-twin"
            extra_inc.append(dict(r, incoming_id=tid, base_id=others[int(_u(iid, "ab") * len(others))],
                                  guid=f"{r['guid']}-twin", forename=near, upn=None, middle_names=None))
            truth[tid] = None
            kinds[tid] = "unknown_twin_alone"
            continue
        elif trap == "names_swapped":
            if not r["forename"] or not r["surname"] or r["forename"] == r["surname"]:
                continue
            inc.at[k, "forename"], inc.at[k, "surname"] = r["surname"], r["forename"]
        elif trap == "postcode_typo":
            pc = r["postcode"] or ""
            if len(pc) < 6 or pc[-1] == pc[-2]:
                continue
            inc.at[k, "postcode"] = pc[:-2] + pc[-1] + pc[-2]
        elif trap == "school_dob_missing":
            inc.at[k, "dob"] = None
        elif trap == "school_dob_typo":
            d = r["dob"]
            digit = str((int(d[-1]) + 3) % 10)
            if d[-2:-1] + digit > "28" or d[-2:-1] + digit == "00":
                continue
            inc.at[k, "dob"] = d[:-1] + digit
        kinds[iid] = trap
    core = core[~core["person_id"].str.startswith("GONE")]
    if extra_inc:
        inc = pd.concat([inc, pd.DataFrame(extra_inc)], ignore_index=True)
    if new_core:
        core = pd.concat([core, pd.DataFrame(new_core)], ignore_index=True)
    _label_kinds(inc, core, truth, kinds)
    core = core.reset_index(drop=True)
    _schools_the_la_holds(core, inc, truth, kinds, seed)
    return core, inc, truth, kinds


#: how often the school the LA holds for a child is not the child's school any more: a family
#: that moved house has often moved school too; any child may have changed school since the
#: LA last heard (in-year transfers between censuses)
STALE_SCHOOL = {"moved": 0.35, "moved_upn": 0.35, "": 0.03}
#: how often the LA holds a school for a namesake it knows (the rest: independent schools,
#: other LAs' schools, home education, not of school age)
NAMESAKE_AT_SCHOOL = 0.6


def _schools_the_la_holds(core, inc, truth, kinds, seed: int) -> None:
    """The LA's school for each child (``base_id``), as stale as real LA records: the world's
    school, replaced by another school for a share of children (``STALE_SCHOOL``, more often for
    a family that moved house); a planted namesake (``N…``: another child of the same name and
    DOB) is held at a school drawn from every school, its namesake's own included (a stale record
    of a child who left it: the trap a school rule must survive), or at none."""
    bases = sorted(set(inc["base_id"]))
    if not bases:
        return
    pos = {p: k for k, p in enumerate(core["person_id"])}
    held = core["base_id"].tolist()
    for iid, b in zip(inc["incoming_id"], inc["base_id"]):
        pid = truth.get(iid)
        if pid is None or pid not in pos:
            continue
        share = STALE_SCHOOL.get(kinds.get(iid, ""), STALE_SCHOOL[""])
        if _u(seed, iid, "school-stale") < share and len(bases) > 1:
            others = [x for x in bases if x != b]
            held[pos[pid]] = others[int(_u(seed, iid, "school-other") * len(others))]
    for k, p in enumerate(core["person_id"]):
        if p.startswith("N"):
            held[k] = bases[int(_u(seed, p, "namesake-school") * len(bases))] \
                if _u(seed, p, "namesake-held") < NAMESAKE_AT_SCHOOL else None
    core["base_id"] = held


def _name_commonness(core, inc) -> dict:
    """Per incoming record how common its full name is, relative to the batch's average: the
    LA's count of its forename times the LA's count of its surname, divided by the mean of that
    product over the batch. In a real population the chance that a child has a namesake (the
    same forename, surname and DOB) among the LA's children is proportional to how common the
    name is (about births per day x share of the forename x share of the surname): "Oliver
    Smith" collides far more often than "Zephyr Okonkwo". The namesake traps are planted with
    this probability (capped at 1) within their share, so the trap still bites (a share of the
    batch well above real life's rate, about 1 in 1,000 records) but, as in life, mostly on
    common names: a rule weighing how rare a name is (term frequencies) is measured against
    namesakes as real data has them, not against rare names colliding as often as common ones."""
    fn = core["forename"].fillna("").str.lower().value_counts()
    sn = core["surname"].fillna("").str.lower().value_counts()
    w = inc["forename"].fillna("").str.lower().map(fn).fillna(1.0).values * \
        inc["surname"].fillna("").str.lower().map(sn).fillna(1.0).values
    mean = float(w.mean()) if len(w) else 1.0
    return dict(zip(inc["incoming_id"], w / (mean or 1.0)))


def _families_move_together(world, inc, seed: int) -> None:
    """A family moves together: the world moves one pupil at a time (a change event), so where
    a pupil's home changed since the LA took its record, its brothers and sisters at the same
    school (same surname and first home) move to the new home too — in most households (85%,
    by a hash of the household; the others stay, as when a child goes to live with the other
    parent). The LA still holds the first home for all of them."""
    first = {(dfe, g): (s.blocks["student"]["surname"], s.blocks["address"]["postcode"], s.blocks["address"]["paon"],
                        s.blocks["address"]["street"])
             for dfe, roll in world._base_state.students.items() for g, s in roll.items()}
    homes: dict[tuple, list[int]] = {}
    for k, (b, g) in enumerate(zip(inc["base_id"], inc["guid"])):
        if (b, g) in first:  # a pupil who joined later has no first home here
            homes.setdefault((b, *first[(b, g)]), []).append(k)
    pcs, lines = inc["postcode"].tolist(), inc["address_line1"].tolist()
    for key, rows in homes.items():
        if len(rows) < 2 or _u(seed, *key, "together") >= 0.85:
            continue
        home = f"{key[3]} {key[4]}"
        movers = [k for k in rows if pcs[k] != key[2] or lines[k] != home]
        if not movers:
            continue
        for k in rows:
            pcs[k], lines[k] = pcs[movers[0]], lines[movers[0]]
    inc["postcode"], inc["address_line1"] = pcs, lines


def _slip(name: str, iid: str, how: str) -> str:
    """A typed error in a name: a neighbouring key (one, sometimes two) or two letters swapped."""
    low = name.lower()
    k = 1 + int(_u(iid, how, "pos") * (len(low) - 1))  # never the first letter
    if how == "transposition":
        k = min(k, len(low) - 2) if len(low) > 2 else 0
        out = low[:k] + low[k + 1] + low[k] + low[k + 2:]
        if out == low:
            out = low[:k] + low[k + 1:] + low[k]
    else:
        keys = KEYBOARD.get(low[k], "e")
        out = low[:k] + keys[int(_u(iid, how, "key") * len(keys))] + low[k + 1:]
        if _u(iid, how, "two") < 0.2 and len(low) >= 5:
            j = 1 + (k % (len(low) - 1))
            if j != k:
                keys = KEYBOARD.get(out[j], "e")
                out = out[:j] + keys[0] + out[j + 1:]
    return out[:1].upper() + out[1:]


def _label_kinds(inc, core, truth, kinds) -> None:
    """The simulator's own noise, for records without an injected trap (first that applies)."""
    twins = inc.groupby(["base_id", "surname", "dob", "postcode"])["incoming_id"].transform("size") > 1
    sibs = inc.groupby(["base_id", "surname", "postcode"])["incoming_id"].transform("size") > 1
    by_pid = core.set_index("person_id")
    for k, r in inc.iterrows():
        iid = r["incoming_id"]
        if iid in kinds:
            continue
        pid = truth.get(iid)
        if pid is None:
            kinds[iid] = "la_unknown"
            continue
        c = by_pid.loc[pid]
        if twins.iloc[k]:
            kinds[iid] = "twin"
        elif (c["forename"] or "") != (r["forename"] or ""):
            kinds[iid] = "nickname"
        elif (c["surname"] or "") != (r["surname"] or ""):
            kinds[iid] = "surname_variant" if c["surname"].lower() != r["surname"].lower() else "surname_case"
        elif str(c["dob"]) != r["dob"]:
            kinds[iid] = "la_dob_error"
        elif (c["postcode"] or "") != (r["postcode"] or ""):
            kinds[iid] = "moved"
        elif not c["upn"]:
            kinds[iid] = "no_upn"
        elif sibs.iloc[k]:
            kinds[iid] = "sibling"
        else:
            kinds[iid] = "clean"
