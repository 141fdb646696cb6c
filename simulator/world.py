"""A deterministic synthetic LA: schools, students, households, the LA's own records, and time.

Everything is a pure function of the :class:`WorldConfig` (its seed above all): two
Worlds from the same config produce byte-identical messages. Time is simulated: the
events of day ``d`` (real changes, "touches" that re-send unchanged blocks, starters,
leavers, new attendance marks and amendments) happen at ``d 12:00 UTC``; a request's
``until`` decides which have happened. Attendance marks are a pure function of
(seed, student, date, session), so they need no state.
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import random
import threading
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta

from simulator import codes

BLOCKS = ("student", "address", "contacts", "sen", "exclusions", "attendance", "attainment")
DATA_BLOCKS = ("student", "address", "contacts", "sen", "exclusions")  # the snapshot / changed-data blocks
EVENT_TIME = time(12, 0)
UTC = UTC


class SimulatorError(ValueError):
    """A bad request parameter (the server answers 400 with this message)."""


@dataclass(frozen=True)
class BaseSpec:
    dfe: str
    name: str
    kind: str  # sims7 | sims_primary
    phase: str  # primary | secondary
    students: int
    migrated_on: date | None = None


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 20260901
    la_code: str = "886"
    epoch: date = date(2026, 9, 1)
    bases: tuple[BaseSpec, ...] = ()
    la_only_children: int = 60
    touch_rate: float = 0.10
    change_rate: float = 0.01
    token_lifetime: int = 3600
    #: share of students whose school record carries a data-entry error the LA should flag
    #: (a UPN with a wrong check letter); the LA's own record stays correct
    entry_error_rate: float = 0.004

    @classmethod
    def demo(cls, seed: int = 20260901) -> WorldConfig:
        mig = date(2026, 7, 20)
        return cls(seed=seed, bases=(
            BaseSpec("8862001", "Green Abbey Primary School", "sims7", "primary", 200),
            BaseSpec("8862002", "Oakfield Primary School", "sims7", "primary", 200),
            BaseSpec("8864001", "Riverside Academy", "sims7", "secondary", 350),
            BaseSpec("8864002", "St Mary's CE High School", "sims7", "secondary", 350),
            BaseSpec("8862003", "Hillview Primary School", "sims_primary", "primary", 200, mig),
            BaseSpec("8862004", "Meadow Lane Primary School", "sims_primary", "primary", 200, mig),
        ))

    @classmethod
    def generated(cls, n_schools: int, n_students: int, seed: int = 7, la_code: str = "886") -> WorldConfig:
        """A larger LA for benchmarks: mixed phases and kinds, DfE numbers 886xxxx."""
        bases = []
        per = max(1, n_students // n_schools)
        for i in range(n_schools):
            secondary = i % 5 == 0
            kind = "sims_primary" if i % 4 == 3 else "sims7"
            dfe = f"{la_code}{(4000 if secondary else 2000) + i:04d}"
            size = per * 2 if secondary else per
            bases.append(BaseSpec(dfe, f"School {dfe}", kind, "secondary" if secondary else "primary", size,
                                  date(2026, 7, 20) if kind == "sims_primary" else None))
        total = sum(b.students for b in bases)
        scale = n_students / total  # keep the total close to n_students
        bases = [replace(b, students=max(1, round(b.students * scale))) for b in bases]
        return cls(seed=seed, la_code=la_code, bases=tuple(bases), la_only_children=n_students // 50)


def _h(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def _u(*parts) -> float:
    return _h(*parts) / 2 ** 64


def academic_year_of(d: date) -> int:
    return d.year if d.month >= 9 else d.year - 1


def year_start(ay: int) -> date:
    return date(ay, 9, 1)


def year_end(ay: int) -> date:
    return date(ay + 1, 7, 22)


def weekdays(start: date, end_inclusive: date):
    d = start
    while d <= end_inclusive:
        if d.weekday() < 5:
            yield d
        d += timedelta(days=1)


def event_at(d: date) -> datetime:
    return datetime.combine(d, EVENT_TIME, tzinfo=UTC)


def upn_for(la_code: str, estab: str, year: int, serial: int) -> str:
    from stdnum.gb.upn import calc_check_digit

    body = f"{la_code}{estab}{year % 100:02d}{serial % 1000:03d}"
    return calc_check_digit(body) + body


@dataclass
class Student:
    guid: str
    base: str
    blocks: dict  # block type -> content (student, address, contacts, sen?, exclusions?, attainment?)
    changed: dict  # block type -> datetime of last change or touch
    absence_rate: float = 0.04

    def clone(self) -> Student:
        return Student(self.guid, self.base, dict(self.blocks), dict(self.changed), self.absence_rate)


@dataclass
class State:
    day: date  # events up to and including this day (at 12:00) have happened
    students: dict  # dfe -> {guid: Student}


class World:
    def __init__(self, config: WorldConfig):
        if not config.bases:
            raise SimulatorError("a world needs at least one base")
        self.config = config
        self.bases = {b.dfe: b for b in config.bases}
        self._truth: dict[tuple[str, str], str | None] = {}
        self._la: list[dict] = []
        self._entry_errors: dict[tuple[str, str], str] = {}
        self._base_state = self._generate()
        self._cursor: State | None = None
        self._lock = threading.RLock()  # the server calls from several threads
        #: F23: students each school has sent by a non-leavers task (a leaver is sent only then)
        self._sent: dict[str, set[str]] = {}
        #: F25/F28: corrections the LA returned, applied at the first event time after receipt
        self._imports: list[dict] = []

    # ------------------------------------------------------------ generation
    def _faker(self, *parts):
        from faker import Faker

        f = Faker("en_GB")
        f.seed_instance(_h(self.config.seed, *parts))
        return f

    def _generate(self) -> State:
        cfg = self.config
        students: dict[str, dict[str, Student]] = {}
        person_no = 0
        for b in cfg.bases:
            rng = random.Random(f"{cfg.seed}:{b.dfe}:students")
            fake = self._faker(b.dfe, "people")
            roll: dict[str, Student] = {}
            serial = 0
            while len(roll) < b.students:
                family = self._family(rng, fake, b)
                for child in family:
                    if len(roll) >= b.students:
                        break
                    serial += 1
                    person_no += 1
                    s = self._student(rng, fake, b, child, serial)
                    roll[s.guid] = s
                    known = rng.random() > 0.03  # ~3% are children the LA has never seen
                    pid = f"P{person_no:06d}" if known else None
                    self._truth[(b.dfe, s.guid)] = pid
                    if pid:
                        self._la.append(self._la_record(rng, pid, s, child))
                    self._maybe_entry_error(b, s)
            students[b.dfe] = roll
        self._la_only(person_no)
        return State(day=cfg.epoch - timedelta(days=1), students=students)

    def _ncy_dob(self, rng, phase: str):
        ay = academic_year_of(self.config.epoch)
        ncys = ["R", "1", "2", "3", "4", "5", "6"] if phase == "primary" else ["7", "8", "9", "10", "11", "12", "13"]
        ncy = rng.choice(ncys)
        n = 0 if ncy == "R" else int(ncy)
        first = date(ay - 5 - n, 9, 1)
        return ncy, first + timedelta(days=rng.randrange(365))

    def _address(self, rng, fake, start: date) -> dict:
        town, district = rng.choice(codes.TOWNS)
        postcode = f"{district} {rng.randrange(1, 10)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
        return {"paon": str(rng.randrange(1, 180)), "saon": None, "street": fake.street_name(),
                "locality": None, "town": town, "county": "Kent", "postcode": postcode,
                "start_date": start.isoformat()}

    def _family(self, rng, fake, b: BaseSpec) -> list[dict]:
        surname = fake.last_name()
        address = self._address(rng, fake, date(2015 + rng.randrange(10), rng.randrange(1, 13), 1))
        contacts = self._contacts(rng, fake, surname, address)
        self._contact_quirks(contacts)
        n = rng.choices([1, 2, 3], [55, 35, 10])[0]
        kids = []
        twins = rng.random() < 0.02
        for i in range(n):
            gender = rng.choice("MF")
            kids.append({"surname": surname, "gender": gender, "address": address, "contacts": contacts,
                         "twin_of": 0 if (twins and i == 1) else None})
        return kids

    def _contacts(self, rng, fake, surname: str, home: dict) -> list[dict]:
        out = []
        rels = rng.choices([["mother", "father"], ["mother"], ["father"], ["mother", "step"], ["carer"]],
                           [55, 20, 5, 10, 10])[0]
        for i, rel in enumerate(rels, start=1):
            gender = "F" if rel == "mother" else "M" if rel in ("father", "step") else rng.choice("MF")
            forename = fake.first_name_female() if gender == "F" else fake.first_name_male()
            c_surname = surname if rng.random() < 0.85 else fake.last_name()
            addresses = [dict(home, type="H")]
            if rng.random() < 0.15:  # an older home address too: the latest start date wins (F34)
                old = self._address(rng, fake, date(2010, 1, 1))
                addresses.insert(0, dict({k: old[k] for k in ("paon", "street", "town", "postcode", "start_date")},
                                         type="H"))
            addresses = [{k: a[k] for k in ("type", "paon", "street", "town", "postcode", "start_date")}
                         for a in addresses]
            phones = []
            for t in rng.sample(["H", "M", "W"], rng.randrange(1, 4)):
                phones.append({"type": t, "number": f"0{rng.randrange(1200, 7999)} {rng.randrange(100000, 999999)}",
                               "primary": False, "main": False})
            flag = rng.random()
            if flag < 0.6:
                phones[0]["primary"] = True
            elif flag < 0.8:
                phones[-1]["main"] = True
            emails = []
            n_emails = rng.choices([0, 1, 2], [5, 80, 15])[0]
            for j in range(n_emails):
                domain = rng.choice(["example.com", "example.org", "example.net"])
                emails.append({"type": "H" if j == 0 or rng.random() < 0.5 else "W",
                               "address": f"{forename.lower()}.{c_surname.lower().replace(' ', '')}{rng.randrange(100)}@{domain}",
                               "primary": j == 0 and rng.random() < 0.7, "main": False})
            out.append({"person_id": f"C{_h(self.config.seed, surname, forename, i, rng.random()) % 10**8:08d}",
                        "title": rng.choice(codes.TITLES[gender]), "forename": forename, "surname": c_surname,
                        "gender": gender, "relationship": codes.RELATIONSHIPS[rel],
                        "parental_responsibility": rel in ("mother", "father") or rng.random() < 0.5,
                        "priority": i, "is_staff": rng.random() < 0.02,
                        "addresses": addresses, "telephones": phones, "emails": emails})
        return out

    def _contact_quirks(self, contacts: list[dict]) -> None:
        """What real SIMS contact data holds (seed 004), decided by hash so the random stream
        (and the rest of the world) is unchanged: records missing a required field, a title or
        gender with no matching lookup, a title in lower case, two parents sharing one email."""
        seed = self.config.seed
        for c in contacts:
            u = _u(seed, c["person_id"], "quirk")
            if u < 0.010:
                c["forename"] = None
            elif u < 0.015:
                c["surname"] = None
            elif u < 0.035:
                c["title"] = ("Mstr", "Capt", "Cllr")[_h(seed, c["person_id"], "title") % 3]
            elif u < 0.050:
                c["title"] = c["title"].lower()
            elif u < 0.060:
                c["gender"] = "U"
        if len(contacts) >= 2 and contacts[0]["emails"] and _u(seed, contacts[0]["person_id"], "shared") < 0.10:
            shared = contacts[0]["emails"][0]["address"]
            second = contacts[1]
            if second["emails"]:
                second["emails"][0]["address"] = shared
            else:
                second["emails"].append({"type": "H", "address": shared, "primary": True, "main": False})

    def _student(self, rng, fake, b: BaseSpec, child: dict, serial: int) -> Student:
        cfg = self.config
        guid = str(uuid.UUID(int=_h(cfg.seed, b.dfe, "guid", serial) << 64 | _h(cfg.seed, b.dfe, serial)))
        ncy, dob = self._ncy_dob(rng, b.phase)
        if child.get("twin_of") is not None and hasattr(self, "_last_dob"):
            ncy, dob = self._last_ncy, self._last_dob
        self._last_ncy, self._last_dob = ncy, dob
        gender = child["gender"]
        formal = rng.choice(codes.FORMAL_NAMES_F if gender == "F" else codes.FORMAL_NAMES_M)
        child["formal_forename"] = formal
        forename = codes.SHORT_FORMS.get(formal, formal) if rng.random() < 0.03 else formal
        middle = (fake.first_name_female() if gender == "F" else fake.first_name_male()) if rng.random() < 0.6 else None
        first_lang = rng.choices(*zip(*codes.LANGUAGES))[0]
        sen = rng.choices(["N", "K", "E"], [82, 15, 3])[0]
        start = date(academic_year_of(self.config.epoch) - (0 if ncy == "R" else rng.randrange(0, 3)), 9, 1)
        upn = upn_for(cfg.la_code, b.dfe[3:], start.year, serial)
        if rng.random() < 0.01:  # temporary UPN: 13th character a letter
            from stdnum.gb.upn import calc_check_digit

            body = upn[1:12] + rng.choice("ABCDEFGHJKLMNPQRTUVWXYZ")
            upn = calc_check_digit(body) + body
        student = {
            "upn": upn, "surname": child["surname"], "forename": forename, "middle_names": middle,
            "preferred_surname": None,
            "preferred_forename": codes.SHORT_FORMS.get(formal) if rng.random() < 0.2 else None,
            "dob": dob.isoformat(), "gender": gender,
            "ethnicity": rng.choices(*zip(*codes.ETHNICITY))[0], "first_language": first_lang,
            "home_language": first_lang if rng.random() < 0.9 else "ENG",
            "religion": rng.choices(*zip(*codes.RELIGION))[0], "ncy": ncy,
            "reg_group": f"{ncy}{rng.choice('ABC')}", "enrol_status": "C", "start_date": start.isoformat(),
            "end_date": None, "eal": first_lang != "ENG", "gifted_talented": rng.random() < 0.05,
            "service_child": rng.random() < 0.02, "traveller": rng.random() < 0.01,
            "connexions_assent": (rng.random() < 0.8) if b.phase == "secondary" else None,
            "looked_after": rng.random() < 0.01, "sen_status": sen,
        }
        blocks = {"student": student, "address": dict(child["address"]),
                  "contacts": {"contacts": copy.deepcopy(child["contacts"])}}
        if sen != "N":
            needs = rng.sample(codes.SEN_NEEDS[:-1], rng.randrange(1, 3))
            blocks["sen"] = {"start_date": start.isoformat(),
                             "needs": [{"type": t, "ranking": i} for i, t in enumerate(needs, start=1)]}
        if b.phase == "secondary" and rng.random() < 0.04:
            blocks["exclusions"] = {"exclusions": [self._exclusion(rng, date(2025, 11, 3) + timedelta(days=rng.randrange(200)))]}
        results = self._attainment(rng, ncy)
        if results:
            blocks["attainment"] = {"results": results}
        when = event_at(cfg.epoch - timedelta(days=1))
        absence = 0.15 if rng.random() < 0.08 else 0.035
        return Student(guid, b.dfe, blocks, {k: when for k in blocks}, absence)

    def _exclusion(self, rng, start: date) -> dict:
        cat = rng.choices(["FIXD", "LNCH", "PERM"], [80, 17, 3])[0]
        end = start + timedelta(days=0 if cat == "LNCH" else rng.randrange(1, 5))
        term = "AUT" if start.month >= 9 else "SPR" if start.month <= 3 else "SUM"
        return {"category": cat, "start_date": start.isoformat(),
                "end_date": None if cat == "PERM" else end.isoformat(), "reason": rng.choice(codes.EXCLUSION_REASONS),
                "term": term, "academic_year": academic_year_of(start),
                "sessions": 1 if cat == "LNCH" else 2 * ((end - start).days + 1)}

    def _attainment(self, rng, ncy: str) -> list[dict]:
        d = "2026-07-01"
        if ncy == "2":  # took phonics in year 1 (last year)
            return [{"hierarchy": "B2B Phonics", "aspect": "Phonics Screening Check",
                     "result": rng.choices(["WA", "WT"], [80, 20])[0], "result_date": d}]
        if ncy == "3":
            return [{"hierarchy": "B2B KS1", "aspect": a, "result": rng.choice(["EXS", "WTS", "GDS", "PKF"]),
                     "result_date": d} for a in ("Reading", "Writing", "Mathematics")]
        if ncy == "7":
            return [{"hierarchy": "B2B KS2", "aspect": a, "result": str(rng.randrange(80, 121)), "result_date": d}
                    for a in ("Reading", "Mathematics", "GPS")]
        return []

    def _maybe_entry_error(self, b: BaseSpec, s: Student) -> None:
        """A school typo, decided by hash so the random stream (and the rest of the world) is unchanged."""
        if _u(self.config.seed, b.dfe, s.guid, "entry-error") >= self.config.entry_error_rate:
            return
        st = s.blocks["student"]
        letters = "ABCDEFGHJKLMNPQRTUVWXYZ"
        wrong = letters[(letters.index(st["upn"][0]) + 1 + _h(s.guid) % 21) % len(letters)]
        s.blocks["student"] = dict(st, upn=wrong + st["upn"][1:])
        self._entry_errors[(b.dfe, s.guid)] = "upn_check_letter"

    def entry_errors(self) -> dict[tuple[str, str], str]:
        """``{(dfe, guid): rule}`` for the data-entry errors planted in school records."""
        return dict(self._entry_errors)

    def _la_record(self, rng, pid: str, s: Student, child: dict) -> dict:
        st, addr = s.blocks["student"], s.blocks["address"]
        rec = {"person_id": pid, "upn": st["upn"], "guid": s.guid if rng.random() < 0.6 else None,
               "forename": child["formal_forename"], "middle_names": st["middle_names"], "surname": st["surname"],
               "gender": st["gender"], "dob": date.fromisoformat(st["dob"]), "postcode": addr["postcode"],
               "address_line1": f"{addr['paon']} {addr['street']}", "paon": addr["paon"], "street": addr["street"],
               "town": addr["town"], "ethnicity": st["ethnicity"], "first_language": st["first_language"],
               "sen_status": st["sen_status"], "base_dfe": s.base}
        r = rng.random()
        if r < 0.02:  # one-character typo in the surname
            sur = rec["surname"]
            i = rng.randrange(1, max(2, len(sur)))
            rec["surname"] = sur[:i] + rng.choice("aeiourstn") + sur[i + 1:]
        elif r < 0.035:  # DOB error: a single digit, or day and month swapped
            dob = rec["dob"]
            if dob.day <= 12 and dob.day != dob.month and rng.random() < 0.5:
                rec["dob"] = dob.replace(day=dob.month, month=dob.day)
            else:
                rec["dob"] = dob + timedelta(days=rng.choice([-5, 5, 10]))
        elif r < 0.075:  # the family moved: the LA still has the old address
            rec["paon"] = str(rng.randrange(1, 180))
            town, district = rng.choice(codes.TOWNS)
            rec["postcode"] = f"{district} {rng.randrange(1, 10)}NF"
            rec["town"] = town
            rec["address_line1"] = f"{rec['paon']} {rec['street']}"
        elif r < 0.125:  # no UPN held
            rec["upn"] = None
        elif r < 0.15:  # surname in capitals
            rec["surname"] = rec["surname"].upper()
        return rec

    def _la_only(self, person_no: int) -> None:
        rng = random.Random(f"{self.config.seed}:la-only")
        fake = self._faker("la-only")
        for i in range(self.config.la_only_children):
            gender = rng.choice("MF")
            dob = date(2008, 9, 1) + timedelta(days=rng.randrange(365 * 14))
            town, district = rng.choice(codes.TOWNS)
            self._la.append({
                "person_id": f"P{person_no + 1 + i:06d}", "upn": None, "guid": None,
                "forename": fake.first_name_female() if gender == "F" else fake.first_name_male(),
                "middle_names": None, "surname": fake.last_name(), "gender": gender, "dob": dob,
                "postcode": f"{district} {rng.randrange(1, 10)}AB", "address_line1": f"{rng.randrange(1, 99)} {fake.street_name()}",
                "paon": None, "street": None, "town": town, "ethnicity": None, "first_language": None,
                "sen_status": None, "base_dfe": None})

    # ------------------------------------------------------------ LA side
    def la_core(self) -> list[dict]:
        return [dict(r) for r in self._la]

    def truth(self) -> dict[tuple[str, str], str | None]:
        return dict(self._truth)

    def credentials(self, dfe: str) -> dict:
        b = self._base(dfe)
        key = str(self.config.seed).encode()

        def secret(label: str, n: int = 24) -> str:
            return hmac.new(key, f"{dfe}:{label}".encode(), hashlib.sha256).hexdigest()[:n]

        if b.kind == "sims7":
            return {"username": f"b2b_{dfe}", "password": secret("password")}
        return {"client_id": f"b2b-{dfe}-{secret('cid', 8)}", "client_secret": secret("secret", 32),
                "subscription_key": secret("subkey", 32),
                "organisation_id": str(uuid.UUID(hex=secret("org", 32)))}

    def airflow_connections(self, base_url: str) -> dict[str, dict]:
        from urllib.parse import urlsplit

        u = urlsplit(base_url)
        out = {}
        for dfe, b in sorted(self.bases.items()):
            c = self.credentials(dfe)
            common = {"conn_type": "http", "host": u.hostname, "port": u.port, "schema": u.scheme}
            if b.kind == "sims7":
                out[f"sims7_{dfe}"] = dict(common, login=c["username"], password=c["password"], extra={"dfe": dfe})
            else:
                out[f"sims_primary_{dfe}"] = dict(common, login=c["client_id"], password=c["client_secret"], extra={
                    "subscription_key": c["subscription_key"], "organisation_id": c["organisation_id"]})
        return out

    def _base(self, dfe: str) -> BaseSpec:
        try:
            return self.bases[dfe]
        except KeyError:
            raise LookupError(f"unknown base {dfe}") from None

    # ------------------------------------------------------------ time
    def state(self, until: datetime) -> State:
        """The world as of ``until``: every event at or before it has happened."""
        if until.tzinfo is None:
            raise SimulatorError("'until' must carry a UTC offset")
        with self._lock:
            return self._state(until.astimezone(UTC))

    def _state(self, until: datetime) -> State:
        last_day = until.date() if until.time() >= EVENT_TIME else until.date() - timedelta(days=1)
        cur = self._cursor
        if cur is None or cur.day > last_day:
            cur = State(self._base_state.day, dict(self._base_state.students))
        day = cur.day + timedelta(days=1)
        while day <= last_day:
            self._apply_day(cur, day)
            self._apply_imports(cur, day)
            cur.day = day
            day += timedelta(days=1)
        self._cursor = cur
        return State(cur.day, {k: dict(v) for k, v in cur.students.items()})

    def _apply_day(self, st: State, d: date) -> None:
        if d.weekday() >= 5 or d <= self._base_state.day:
            return
        when = event_at(d)
        for dfe in sorted(st.students):
            roll = dict(st.students[dfe])
            rng = random.Random(f"{self.config.seed}:{dfe}:{d.isoformat()}")
            current = sorted(g for g, s in roll.items() if s.blocks["student"]["end_date"] is None)
            n = len(current)
            fake = self._faker(dfe, "events", d.isoformat())
            for g in rng.sample(current, min(n, round(n * self.config.touch_rate))):
                s = roll[g].clone()
                s.changed[rng.choice(["student", "address", "contacts"])] = when
                roll[g] = s
            for g in rng.sample(current, min(n, max(1, round(n * self.config.change_rate)))):
                s = roll[g].clone()
                self._change(rng, fake, s, d)
                s.changed.update({k: when for k in s.blocks if s.changed.get(k) == "new"})
                roll[g] = s
            if rng.random() < 0.3:  # a starter
                b = self.bases[dfe]
                family = self._family(rng, fake, b)
                s = self._student(rng, fake, b, family[0], 100000 + (d - self.config.epoch).days)
                s.blocks["student"]["start_date"] = d.isoformat()
                s.changed = {k: when for k in s.blocks}
                roll[s.guid] = s
                self._truth[(dfe, s.guid)] = None
            if rng.random() < 0.2 and current:  # a leaver
                g = rng.choice(current)
                s = roll[g].clone()
                s.blocks["student"] = dict(s.blocks["student"], end_date=d.isoformat())
                s.changed["student"] = when
                roll[g] = s
            st.students[dfe] = roll

    # ------------------------------------------------------------ imports (LA -> school)
    RETURN_FIELDS = ("upn", "surname", "forename", "middle_names", "gender", "dob")
    RETURN_ADDRESS = ("paon", "street", "town", "postcode")

    def import_return(self, dfe: str, sent_at: datetime, pupils: list[dict]) -> dict:
        """Accept the LA's corrections for students of a school (F25/F28).

        Each pupil is ``{"guid", "fields": {F28 field: value}, "address": {...} | None}``.
        The school applies them at the first event time at or after ``sent_at``; the
        changed blocks are then stamped with that time, so the next changed-data export
        carries them. Unknown students are refused, each with its reason.
        """
        self._base(dfe)
        if sent_at.tzinfo is None:
            raise SimulatorError("'sent' must carry a UTC offset")
        sent_at = sent_at.astimezone(UTC)
        day = sent_at.date() if sent_at.time() <= EVENT_TIME else sent_at.date() + timedelta(days=1)
        with self._lock:
            known = self.state(sent_at).students[dfe]
            applied, refused = [], []
            for p in pupils:
                bad = sorted(set(p.get("fields") or {}) - set(self.RETURN_FIELDS)) + sorted(
                    set(p.get("address") or {}) - set(self.RETURN_ADDRESS))
                if p.get("guid") not in known:
                    refused.append({"guid": p.get("guid"), "reason": "unknown student"})
                elif bad:
                    refused.append({"guid": p["guid"], "reason": f"fields not accepted: {', '.join(bad)}"})
                else:
                    applied.append(p["guid"])
                    self._imports.append({"dfe": dfe, "day": day, "guid": p["guid"],
                                          "fields": dict(p.get("fields") or {}),
                                          "address": dict(p.get("address") or {})})
            if applied and self._cursor is not None and self._cursor.day >= day:
                self._cursor = None  # replay: the corrections now belong to the school's history
        return {"applied": len(applied), "refused": refused, "effective": event_at(day).isoformat()}

    def _apply_imports(self, st: State, d: date) -> None:
        when = event_at(d)
        for imp in self._imports:
            if imp["day"] != d or imp["guid"] not in st.students.get(imp["dfe"], {}):
                continue
            roll = dict(st.students[imp["dfe"]])
            s = roll[imp["guid"]].clone()
            if imp["fields"]:
                s.blocks["student"] = dict(s.blocks["student"], **imp["fields"])
                s.changed["student"] = when
            if imp["address"]:
                s.blocks["address"] = dict(s.blocks["address"], **imp["address"])
                s.changed["address"] = when
            roll[imp["guid"]] = s
            st.students[imp["dfe"]] = roll

    def _change(self, rng, fake, s: Student, d: date) -> None:
        kind = rng.choice(["move", "reg_group", "preferred", "sen", "phone", "exclusion"])
        if kind == "move":
            s.blocks["address"] = self._address(rng, fake, d)
            s.changed["address"] = "new"
        elif kind in ("reg_group", "preferred"):
            st = dict(s.blocks["student"])
            if kind == "reg_group":
                st["reg_group"] = f"{st['ncy']}{rng.choice('ABCD')}"
            else:
                st["preferred_forename"] = None if st["preferred_forename"] else st["forename"][:3]
            s.blocks["student"] = st
            s.changed["student"] = "new"
        elif kind == "sen":
            sen = copy.deepcopy(s.blocks.get("sen") or {"start_date": d.isoformat(), "needs": []})
            have = {n["type"] for n in sen["needs"]}
            if sen["needs"] and rng.random() < 0.4:
                sen["needs"].pop()
            else:
                sen["needs"].append({"type": rng.choice([t for t in codes.SEN_NEEDS[:-1] if t not in have]),
                                     "ranking": len(sen["needs"]) + 1})
            s.blocks["sen"] = sen
            st = dict(s.blocks["student"], sen_status="K" if sen["needs"] else "N")
            s.blocks["student"] = st
            s.changed["sen"] = s.changed["student"] = "new"
        elif kind == "phone":
            contacts = copy.deepcopy(s.blocks["contacts"])
            if contacts["contacts"] and contacts["contacts"][0]["telephones"]:
                contacts["contacts"][0]["telephones"][0]["number"] = f"07{rng.randrange(100, 999)} {rng.randrange(100000, 999999)}"
            s.blocks["contacts"] = contacts
            s.changed["contacts"] = "new"
        else:
            ex = copy.deepcopy(s.blocks.get("exclusions") or {"exclusions": []})
            ex["exclusions"].append(self._exclusion(rng, d))
            s.blocks["exclusions"] = ex
            s.changed["exclusions"] = "new"

    # ------------------------------------------------------------ attendance (pure)
    def closure_days(self, dfe: str, ay: int) -> set[date]:
        start = year_start(ay)
        return {start + timedelta(days=_h(self.config.seed, dfe, ay, "inset", i) % 250) for i in range(2)}

    def first_mark(self, s: Student, d: date, session: str) -> str:
        if d in self.closure_days(s.base, academic_year_of(d)):
            return "#"
        u = _u(self.config.seed, s.guid, d, session)
        if u >= s.absence_rate:
            return ("/" if session == "AM" else "\\") if u > s.absence_rate + 0.02 else "L"
        v = _u(self.config.seed, s.guid, d, session, "code")
        if v < 0.04:
            return "N"  # no reason yet: amended later
        return codes.AUTHORISED[0:5][int(v * 50) % 5] if v < 0.7 else "IIOGU"[int(v * 50) % 5]

    def amendment(self, s: Student, d: date, session: str) -> tuple[str, date] | None:
        """An 'N' is amended three school days later to I (illness) or O (unauthorised)."""
        if self.first_mark(s, d, session) != "N":
            return None
        when = d
        for _ in range(3):
            when += timedelta(days=3 if when.weekday() == 4 else 1)
        code = "I" if _u(self.config.seed, s.guid, d, session, "amend") < 0.6 else "O"
        return code, when

    def mark_as_of(self, s: Student, d: date, session: str, until: datetime) -> str:
        if event_at(d) > until:
            return "-"
        start = s.blocks["student"]["start_date"]
        if d.isoformat() < start:
            return "-"
        amend = self.amendment(s, d, session)
        if amend and event_at(amend[1]) <= until:
            return amend[0]
        return self.first_mark(s, d, session)

    def marks_string(self, s: Student, ay: int, until: datetime, keep: str | None = None,
                     from_date: date | None = None) -> str:
        out = []
        last = min(year_end(ay), until.astimezone(UTC).date())
        for d in weekdays(year_start(ay), last):
            for session in ("AM", "PM"):
                m = self.mark_as_of(s, d, session, until)
                if (keep is not None and m not in keep) or (from_date and d < from_date):
                    m = "-"
                out.append(m)
        return "".join(out).rstrip("-") or "-"

    def mark_changes(self, s: Student, since: datetime, until: datetime) -> list[dict]:
        """Marks recorded or amended in [since, until)."""
        out = []
        lo = (since.astimezone(UTC) - timedelta(days=7)).date()
        for d in weekdays(max(lo, year_start(academic_year_of(until.date()))), until.astimezone(UTC).date()):
            if d.isoformat() < s.blocks["student"]["start_date"]:
                continue
            for session in ("AM", "PM"):
                if since <= event_at(d) < until:
                    out.append({"date": d.isoformat(), "session": session, "code": self.first_mark(s, d, session)})
                amend = self.amendment(s, d, session)
                if amend and since <= event_at(amend[1]) < until:
                    out.append({"date": d.isoformat(), "session": session, "code": amend[0]})
        return out

    # ------------------------------------------------------------ exports
    def _select(self, dfe: str, st: State, group: str, ncys) -> list[Student]:
        if group not in ("ncy", "lac", "leavers"):
            raise SimulatorError(f"unknown group {group!r}")
        roll = [st.students[dfe][g] for g in sorted(st.students[dfe])]
        sent = self._sent.get(dfe, set())
        out = []
        for s in roll:
            core = s.blocks["student"]
            leaver = core["end_date"] is not None
            if group == "leavers":
                if leaver and s.guid in sent:  # F23: only if a non-leavers task sent them before
                    out.append(s)
                continue
            if leaver:
                continue
            if group == "lac" and not core["looked_after"]:
                continue
            if ncys and core["ncy"] not in ncys:
                continue
            out.append(s)
        return out

    def pupils(self, dfe: str, filter: str, until: datetime, since: datetime | None = None, group: str = "ncy",
               ncys=None, attendance: str | None = None, months: int | None = None, hierarchies=None):
        """[(guid, {block type: content})] for a SIMS 7 scheduled-task run."""
        self._base(dfe)
        if filter not in ("snapshot", "changed_data", "attendance", "attainment"):
            raise SimulatorError(f"unknown filter {filter!r}")
        if filter == "changed_data" and since is None:
            raise SimulatorError("changed_data needs 'since'")
        if since is not None and since > until:
            raise SimulatorError("'since' is after 'until'")
        if months is not None and not 1 <= months <= 13:
            raise SimulatorError("'months' must be between 1 and 13")
        st = self.state(until)
        out = []
        for s in self._select(dfe, st, group, ncys):
            if filter == "snapshot":
                blocks = {k: s.blocks[k] for k in DATA_BLOCKS if k in s.blocks}
            elif filter == "changed_data":
                blocks = {k: s.blocks[k] for k in DATA_BLOCKS
                          if k in s.blocks and since <= s.changed.get(k, event_at(date(1900, 1, 1))) < until}
                if not blocks:
                    continue
            elif filter == "attendance":
                blocks = {"student": s.blocks["student"], "attendance": self._attendance_block(s, until, attendance, months)}
            else:
                results = [r for r in s.blocks.get("attainment", {}).get("results", [])
                           if not hierarchies or r["hierarchy"] in hierarchies]
                if not results:
                    continue
                blocks = {"student": s.blocks["student"], "attainment": {"results": results}}
            if group == "leavers" and self.bulk_deleted(s):  # F26: the school deleted all but the core
                blocks = {k: v for k, v in blocks.items() if k == "student"}
                if not blocks:
                    continue
            out.append((s.guid, blocks))
        if group != "leavers" and out:
            with self._lock:
                self._sent.setdefault(dfe, set()).update(g for g, _ in out)
        return out

    def bulk_deleted(self, s: Student) -> bool:
        """F26: a third of leavers had their data bulk-deleted by the school (core kept)."""
        return s.blocks["student"]["end_date"] is not None and _u(self.config.seed, s.guid, "bulk-deleted") < 0.34

    def _attendance_block(self, s: Student, until: datetime, which: str | None, months: int | None) -> dict:
        which = which or "all_current"
        if which not in ("all_current", "unauthorised_current", "absences_current", "all_previous"):
            raise SimulatorError(f"unknown attendance filter {which!r}")
        ay = academic_year_of(until.astimezone(UTC).date()) - (1 if which == "all_previous" else 0)
        keep = {"unauthorised_current": codes.UNAUTHORISED,
                "absences_current": codes.UNAUTHORISED + codes.AUTHORISED}.get(which)
        from_date = (until.astimezone(UTC).date() - timedelta(days=30 * months)) if months and which != "all_previous" else None
        if which == "all_previous":
            until = event_at(year_end(ay))
        return {"academic_year": ay, "start_date": year_start(ay).isoformat(),
                "marks": self.marks_string(s, ay, until, keep, from_date)}

    def export_sims7(self, dfe: str, filter: str, until: datetime, since: datetime | None = None, **kw) -> bytes:
        from simulator.xml_writer import write_message

        b = self._base(dfe)
        pupils = self.pupils(dfe, filter, until, since, **kw)
        return write_message(self, b, filter, since, until, pupils)

    def primary_datagroup(self, dfe: str, group: str, until: datetime, since: datetime | None = None,
                          ncys=None, student_group: str = "ncy") -> list[dict]:
        """One SIMS Primary data group's items; ``student_group`` is the F23 group (``ncy``,
        ``lac``: looked-after children only, ``leavers``: leavers sent before by another group)."""
        if group not in ("student", "address", "contacts", "sen", "exclusions", "attendance"):
            raise LookupError(f"unknown data group {group!r}")
        if since is not None and since > until:
            raise SimulatorError("'changedSince' is after 'changedUntil'")
        st = self.state(until)
        items = self._primary_items(dfe, st, group, until, since, ncys, student_group)
        if student_group != "leavers" and items:
            with self._lock:
                self._sent.setdefault(dfe, set()).update(i["studentId"] for i in items)
        return items

    def _primary_items(self, dfe: str, st: State, group: str, until: datetime, since: datetime | None, ncys,
                       student_group: str) -> list[dict]:
        items = []
        for s in self._select(dfe, st, student_group, ncys):
            if student_group == "leavers" and group != "student" and self.bulk_deleted(s):
                continue  # F26: the school deleted all but the core
            if group == "attendance":
                ay = academic_year_of(until.astimezone(UTC).date())
                if since is None:
                    data = {"academic_year": ay, "start_date": year_start(ay).isoformat(),
                            "marks": self.marks_string(s, ay, until)}
                    changed = until
                else:
                    changes = self.mark_changes(s, since, until)
                    if not changes:
                        continue
                    data = {"academic_year": ay, "changes": changes}
                    changed = max(event_at(date.fromisoformat(c["date"])) for c in changes)
                items.append({"studentId": s.guid, "changed": changed.isoformat(), "data": data})
                continue
            if group not in s.blocks:
                continue
            changed = s.changed.get(group)
            if since is not None and not (since <= changed < until):
                continue
            items.append({"studentId": s.guid, "changed": changed.isoformat(), "data": s.blocks[group]})
        return items
