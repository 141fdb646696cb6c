-- Issue 15: after each run, the match stage looks up every child the run linked among the
-- links other runs made on overwhelming evidence or a forename typed at home
-- (b2b.reconcile.match_stage.earlier_overwhelming_links: CROSS_RUN_RULES). No index on
-- results.match leads with person_id, so that UPDATE read the whole table: ~20-47 ms a
-- school run at 80k students, growing with the LA and its history. Those links are a few in
-- ten thousand: a partial index holding only them (the statement's own predicate, written
-- the same way) makes the lookup a few probes.
CREATE INDEX IF NOT EXISTS match_cross_run_link_idx ON results.match (person_id)
    WHERE status IN ('matched', 'matched_with_conflicts') AND rule = 'weights'
      AND explanation ?| ARRAY['overwhelming', 'typed_forename_at_home'];
