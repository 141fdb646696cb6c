"""The matcher's large-run helpers (issue 15): blocking's LA side built once for many parts
(``blocking.LAIndex``) and a part decided again from its kept scored pairs (``reuse``) give
exactly what blocking and deciding afresh give."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def data():
    from b2b import matching
    from simulator.matching_data import match_dataset

    core, inc, _, _ = match_dataset(3000, 3600, seed=5)
    return core, inc, matching.prepare_core(core)


def test_the_run_level_blocking_index_pairs_any_subset_of_la_rows_as_blocking_that_subset_does(data, monkeypatch):
    """Random subsets of the LA rows (the candidates of one part) and random batches of
    schools: the same pairs in the same order as ``candidate_pairs`` on the subset taken out
    (its merge path), ``ci`` counted in the whole frame; with GUID links too. Also one LA value
    shared by more rows than ``block_cap``: skipped the same way."""
    from b2b import matching
    from b2b.matching import blocking
    from b2b.matching.normalise import prepare

    core, inc, whole = data
    monkeypatch.setattr(blocking, "SMALL_ROWS", 0)  # the merge path (a large part's)
    rng = np.random.default_rng(7)
    bases = sorted(inc["base_id"].unique())
    for cap in (500, 1):  # (1: every block of two LA rows or more is over the cap)
        cfg = matching.MatchConfig(block_cap=cap)
        index = blocking.LAIndex(whole.prep, cap)
        for _ in range(3):
            part = prepare(inc[inc["base_id"].isin(rng.choice(bases, 2, replace=False))].reset_index(drop=True),
                           "incoming_id")
            rows = np.sort(rng.choice(len(core), int(len(core) * 0.8), replace=False)) if cap == 500 \
                else np.arange(len(core))  # (a subset can split a block over the cap: the stage never does)
            sub = whole.take(rows)
            links = None
            if cap == 500:  # GUID links of a few records to LA rows in and out of the subset
                pick = rng.choice(len(part), 5, replace=False)
                links = part.iloc[pick][["base_id", "guid"]].assign(
                    person_id=whole.prep["id"].values[rng.choice(len(core), 5, replace=False)].tolist(),
                    linked_by="match").astype(str).reset_index(drop=True)
            expected = blocking.candidate_pairs(sub.prep, part, cfg, links)
            got = index.pairs(part, cfg, links, rows)
            assert len(got) == len(expected) > 0
            assert (got["ci"].to_numpy() == rows[expected["ci"].to_numpy()]).all()
            assert (got["ii"].to_numpy() == expected["ii"].to_numpy()).all()


def test_a_part_decided_again_from_its_kept_pairs_decides_as_deciding_it_afresh(data):
    """``match(..., reuse=kept)`` keeps the prepared records and scored pairs; a second call with
    ``claimed`` reads them back: the same decisions as a call with ``claimed`` from scratch
    (and the first call's are those of a call without ``reuse``)."""
    from b2b import matching

    core, inc, whole = data
    kept: dict = {}
    first = matching.match(whole, inc, reuse=kept)
    assert {"inc", "s", "explained"} <= set(kept)
    assert first.equals(matching.match(whole, inc))
    # claim the children the batch linked on overwhelming evidence or a forename typed at home
    over = first["explanation"].str.contains('"overwhelming"|"typed_forename_at_home"')
    claimed = set(first.loc[over, "person_id"])
    assert claimed
    again = matching.match(whole, inc, claimed=claimed, reuse=kept)
    assert again.equals(matching.match(whole, inc, claimed=claimed))
    assert not again.equals(first)  # (the claim changed decisions: the test reads something)
