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
