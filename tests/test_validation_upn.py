"""The UPN check (validate's derived ``upn_check_ok``, the matcher's UPN kinds: ``b2b.upn``) agrees with
python-stdnum's ``gb.upn.is_valid``."""
import random
import string
from datetime import date

from stdnum.gb import upn

from b2b.ingest.validation import _upn_ok

AS_OF = date(2026, 10, 5)


def _samples() -> list:
    rng = random.Random(15)
    samples = ["F886200326001", "A886200326001", "B886200126231", "f886200326001", " F886200326001",
               "F886 200326001", "F8862003260012", "F88620032600", "F88620032600A", "F88620032600I",
               "F88620032600a", "F８86200326001", "F886200326001\n", "F886-200326001", "1886200326001", "0" * 13]
    for la in range(1000):  # every LA number, each with its right check letter and a wrong one
        body = f"{la:03d}{rng.randrange(10 ** 8):08d}" + rng.choice("0123456789ABCDEFGHJKLMNPQRTUVWXYZ")
        right = upn.calc_check_digit(body)
        samples += [right + body, rng.choice("ABCDEFGHJKLMNPQRTUVWXYZ") + body, right.lower() + body.lower()]
    alphabet = string.ascii_uppercase + string.digits + " -"
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.choice((12, 13, 13, 14)))) for _ in range(5000)]
    return samples + [5, 8862003260011, 1.5, True]


def test_the_upn_check_agrees_with_stdnum_over_many_upns():
    samples = _samples()
    assert sum(upn.is_valid(s) for s in samples if isinstance(s, str)) > 250  # the sample holds many valid UPNs
    for s in samples:
        assert _upn_ok(s, AS_OF) == upn.is_valid(str(s)), s
    assert _upn_ok(None, AS_OF) is None and _upn_ok("", AS_OF) is None


def test_the_matchers_upn_kinds_agree_with_stdnum_over_many_upns():
    """The matcher classifies each (upper-cased, space-free) UPN: valid permanent, valid
    temporary (a letter last), invalid or missing, by the same check."""
    from b2b.matching.normalise import _upn_kind

    for s in _samples():
        u = str(s).upper().replace(" ", "")
        want = "" if not u else "invalid" if not upn.is_valid(u) else "temp" if u[-1].isalpha() else "valid"
        assert _upn_kind(u) == want, s


def test_the_matchers_upn_kinds_of_many_upns_at_once_are_each_ones_kind():
    """``upn_kinds`` checks the plain UPNs of a list together (numpy): each kind is the kind of
    the UPN alone, whatever the list holds (valid, temporary, wrong check letters, other LA
    numbers, other lengths and characters, lower case, missing)."""
    from b2b.matching.normalise import _upn_kind, upn_kinds

    upns = [str(s).upper().replace(" ", "") for s in _samples()] + ["", "f886200326001", "F886200326001"]
    kinds = upn_kinds(upns)
    assert kinds == [_upn_kind(u) for u in upns]
    assert {"valid", "temp", "invalid", ""} <= set(kinds)
    assert upn_kinds([]) == [] and upn_kinds(["", "x"]) == ["", "invalid"]
