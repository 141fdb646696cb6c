"""The DfE's Unique Pupil Number check, shared by validation and matching (one definition).

python-stdnum's ``gb.upn.is_valid`` is the reference (``tests/test_validation_upn.py`` compares
the two over many UPNs); a plain 13-character ASCII UPN, all of them in practice, is checked
with the DfE's arithmetic here, ~20x faster than stdnum's normalising path (issue 15: the
matcher checks every candidate child's UPN in every school run).
"""
from __future__ import annotations

from operator import mul
from typing import Any

#: the DfE's UPN check-letter alphabet (value = position) and the LA numbers UPNs are issued under,
#: as python-stdnum has them (tests/test_validation_upn.py compares ``is_valid`` with stdnum's over many UPNs)
_UPN_ALPHABET = "ABCDEFGHJKLMNPQRTUVWXYZ0123456789"
_UPN_VALUE = {c: i for i, c in enumerate(_UPN_ALPHABET)}
_UPN_WEIGHTS = tuple(range(2, 14))
_UPN_LA = frozenset((
    201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 301, 302, 303, 304, 305, 306, 307, 308, 309,
    310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 330, 331, 332, 333, 334, 335, 336, 340, 341, 342, 343,
    344, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 370, 371, 372, 373, 380, 381, 382, 383, 384, 390, 391,
    392, 393, 394, 420, 800, 801, 802, 803, 805, 806, 807, 808, 810, 811, 812, 813, 815, 816, 821, 822, 823, 825,
    826, 830, 831, 835, 836, 837, 840, 841, 845, 846, 850, 851, 852, 855, 856, 857, 860, 861, 865, 866, 867, 868,
    869, 870, 871, 872, 873, 874, 876, 877, 878, 879, 880, 881, 882, 883, 884, 885, 886, 887, 888, 889, 890, 891,
    892, 893, 894, 895, 896, 908, 909, 916, 919, 921, 925, 926, 928, 929, 931, 933, 935, 936, 937, 938))


def is_valid(u: Any) -> bool | None:
    """Whether a UPN is well formed with the right check letter (python-stdnum's ``gb.upn.is_valid``).

    A plain 13-character ASCII UPN (all of them, in practice) is checked here with the DfE's
    arithmetic: the weighted sum of characters 2-13 (weights 2..13, letters by their place in the
    alphabet) mod 23 names the check letter. Anything else (spaces, other characters, other lengths)
    goes to stdnum, which normalises it first.
    """
    if u is None or u == "":
        return None
    s = str(u)
    if len(s) == 13 and s.isascii() and s.isalnum():
        n = s.upper()
        body = n[1:12]
        if not body.isdigit() or n[12] not in _UPN_VALUE or int(n[1:4]) not in _UPN_LA:
            return False
        return _UPN_ALPHABET[sum(map(mul, _UPN_WEIGHTS, map(_UPN_VALUE.__getitem__, n[1:]))) % 23] == n[0]
    from stdnum.gb import upn as upn_mod

    return upn_mod.is_valid(s)
