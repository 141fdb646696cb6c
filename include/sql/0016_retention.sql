-- 0016 (issue 10 part 4, F44): data protection. Delete Files enforces a retention per kind of
-- data (b2b.config.settings: *_RETENTION_DAYS); what it removed is recorded here.
ALTER TABLE raw.outbound_file ALTER COLUMN payload DROP NOT NULL;   -- null once purged
ALTER TABLE raw.outbound_file ADD COLUMN purged_at timestamptz;
ALTER TABLE raw.inbound_file ADD COLUMN blocks_purged_at timestamptz;  -- superseded blocks' content emptied

-- One row per Delete Files run: the settings it applied and how much it removed (no personal data).
CREATE TABLE ops.retention_run (
    run_id      bigserial PRIMARY KEY,
    run_at      timestamptz NOT NULL DEFAULT now(),
    run_by      text        NOT NULL DEFAULT session_user,
    as_of       timestamptz NOT NULL,
    settings    jsonb       NOT NULL,
    counts      jsonb       NOT NULL
);
