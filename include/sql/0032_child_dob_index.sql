-- Issue 15: a small run (a changed-data day's few students) finds its candidate LA children by
-- index probes (b2b.reconcile.match_stage.run_candidates); the DOB + initial keys need this one.
CREATE INDEX IF NOT EXISTS child_dob_idx ON core.child (dob);
