-- Contacts (issue 15): the inputs each base's contacts were last rebuilt from, so a run that
-- brings no student or contacts block and finds the base's files unchanged since that
-- rebuild skips the rebuild (its result would be identical) instead of re-reading the base.
CREATE TABLE core.contact_sync (
    base_id      text PRIMARY KEY,
    inputs       text NOT NULL,          -- fingerprint of the base's parsed/loaded files
    counts       jsonb NOT NULL,         -- the counts of that rebuild (reported again when skipped)
    window_order text,                  -- the run that last rebuilt or skipped
    synced_at    timestamptz NOT NULL DEFAULT now()
);

-- Validation (issue 15): Great Expectations' verdict on each value it has judged, per
-- expectation, so a validate task whose values were all judged before needs neither GX nor
-- its import. Keys are digests (of the expectation with the GX version, and of the value):
-- no value is stored. A cache: rows unused for 35 days are pruned, any row may be deleted.
CREATE TABLE ops.gx_verdict (
    expectation text    NOT NULL,
    value_key   text    NOT NULL,
    failed      boolean NOT NULL,
    seen        date    NOT NULL DEFAULT current_date,
    PRIMARY KEY (expectation, value_key)
);
CREATE INDEX gx_verdict_seen_idx ON ops.gx_verdict (seen);
