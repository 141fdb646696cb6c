"""Learned weights (issue 14 part 4): m/u probabilities estimated from the data, as Splink and
fastLink do, seeded by the hand weights and bounded by them.

* ``u`` (how often a level occurs between two different children) is estimated on random
  (LA record, school record) pairs: almost all of them are different children;
* ``m`` (how often a level occurs for the same child) and the share of matches among the
  blocked pairs are estimated by expectation maximisation over the blocked candidate pairs,
  with ``u`` fixed, starting from ``m = u * 2^hand weight``;
* the learned weight ``log2(m/u)`` of each level is kept within [0.5, 1.5] x its hand weight
  (same sign; a level with no hand weight stays at 0), on a grid of 0.5 bit.

Weights are not learned at run time: ``b2b match --train`` prints them next to the hand
weights and writes a file an analyst reviews; the reviewed file
(``include/matching/weights.json``) is what the matcher ships with.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from b2b.matching.comparisons import COMPARISONS, Weights

WEIGHTS_FILE = Path(__file__).resolve().parents[2] / "include" / "matching" / "weights.json"


def load_weights(path: Path | str | None = None) -> Weights:
    """The reviewed weights file (``weights`` object: Weights field -> bits); hand weights
    for any field it does not name, and when there is no file. Read again only when the file
    changed (its size and modification time: every ``MatchConfig()`` calls this, twice in a
    school run; ``Weights`` is frozen, so one object serves them all)."""
    p = Path(path) if path else WEIGHTS_FILE
    try:
        st = p.stat()
    except FileNotFoundError:
        return Weights()
    return _read_weights(str(p), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=8)
def _read_weights(path: str, mtime_ns: int, size: int) -> Weights:
    """:func:`load_weights` of the file as it is (``mtime_ns``, ``size``: the cache's key)."""
    p = Path(path)
    data = json.loads(p.read_text())["weights"]
    known = {f.name for f in fields(Weights)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{p}: unknown weight(s) {', '.join(sorted(unknown))}")
    return Weights(**{k: float(v) for k, v in data.items()})


def bound(learned: float, hand: float) -> float:
    """``learned`` kept within [0.5, 1.5] x ``hand`` (0 stays 0), rounded to 0.5 bit."""
    if hand == 0 or math.isnan(learned):
        return hand
    lo, hi = sorted((0.5 * hand, 1.5 * hand))
    lo, hi = math.ceil(lo * 2) / 2, math.floor(hi * 2) / 2  # on the half-bit grid, inside the bounds
    return min(max(round(learned * 2) / 2, lo), hi)


def train(core_df: Any, incoming_df: Any, cfg: Any = None, *, u_pairs: int = 200_000, iterations: int = 25,
          seed: int = 1) -> dict:
    """Estimate m/u per comparison level. Returns ``{"weights": {name: bits}, "levels": [...],
    "match_share": λ, "pairs": n}``; ``weights`` are bounded (see :func:`bound`)."""
    import numpy as np
    import pandas as pd

    from b2b.matching.blocking import candidate_pairs
    from b2b.matching.comparisons import score_pairs
    from b2b.matching.decide import MatchConfig
    from b2b.matching.normalise import prepare

    cfg = cfg or MatchConfig()
    hand = cfg.weights
    core = prepare(core_df.reset_index(drop=True), "person_id")
    inc = prepare(incoming_df.reset_index(drop=True), "incoming_id")
    blocked = score_pairs(core, inc, candidate_pairs(core, inc, cfg), cfg)
    rng = np.random.default_rng(seed)
    rand = pd.DataFrame({"ci": rng.integers(0, len(core), u_pairs), "ii": rng.integers(0, len(inc), u_pairs)})
    random_pairs = score_pairs(core, inc, rand, cfg)

    eps = 1e-6
    u: dict[str, np.ndarray] = {}
    m: dict[str, np.ndarray] = {}
    for comp in COMPARISONS:
        k = len(comp.levels)
        counts = np.bincount(random_pairs[comp.field + "_lv"].values, minlength=k) + 0.5
        u[comp.field] = counts / counts.sum()
        w0 = np.array([0.0 if lv.weight is None else getattr(hand, lv.weight) for lv in comp.levels])
        mm = u[comp.field] * np.exp2(w0)
        m[comp.field] = mm / mm.sum()
    gam = {c.field: blocked[c.field + "_lv"].values.astype(int) for c in COMPARISONS}
    # at most one true pair per school record: the share of matches cannot exceed this
    lam_max = min(0.9, len(inc) / max(len(blocked), 1))
    lam = lam_max / 2
    for _ in range(iterations):
        log_odds = np.full(len(blocked), math.log(lam / (1 - lam)))
        for comp in COMPARISONS:
            f = comp.field
            log_odds += np.log(m[f][gam[f]] + eps) - np.log(u[f][gam[f]] + eps)
        p = 1 / (1 + np.exp(-np.clip(log_odds, -50, 50)))
        lam = float(np.clip(p.mean(), 1e-4, lam_max))
        for comp in COMPARISONS:
            f = comp.field
            mm = np.bincount(gam[f], weights=p, minlength=len(comp.levels)) + eps
            m[f] = mm / mm.sum()
    learned: dict[str, float] = {}
    levels = []
    for comp in COMPARISONS:
        f = comp.field
        for k, lv in enumerate(comp.levels):
            raw = math.log2((m[f][k] + eps) / (u[f][k] + eps))
            row = {"field": f, "level": lv.label, "m": float(m[f][k]), "u": float(u[f][k]), "raw": round(raw, 2)}
            if lv.weight is not None:
                h = getattr(hand, lv.weight)
                learned[lv.weight] = bound(raw, h)
                row |= {"weight": lv.weight, "hand": h, "learned": learned[lv.weight]}
            levels.append(row)
    return {"weights": learned, "levels": levels, "match_share": lam, "pairs": int(len(blocked))}


def report(result: dict) -> str:
    """A table of hand and learned weights, one line per level."""
    lines = [f"{len(result['levels'])} levels over {result['pairs']:,} blocked pairs "
             f"(estimated share of matches {result['match_share']:.3f})",
             f"{'field':<14}{'level':<28}{'m':>8}{'u':>10}{'raw':>8}{'hand':>7}{'learned':>9}"]
    for r in result["levels"]:
        lines.append(f"{r['field']:<14}{r['level']:<28}{r['m']:>8.4f}{r['u']:>10.6f}{r['raw']:>8.2f}"
                     + (f"{r['hand']:>7.1f}{r['learned']:>9.1f}" if "hand" in r else ""))
    return "\n".join(lines)


def write(result: dict, path: Path | str, note: str = "") -> None:
    full = asdict(Weights()) | result["weights"]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"note": note, "match_share": round(result["match_share"], 4),
                                      "pairs": result["pairs"], "weights": full}, indent=2, sort_keys=True) + "\n")
