-- 0009 (issue 4; F19b): the last known definition of each school task, and alerts raised when
-- it changes. Ops route alerts from this table or from the 'b2b.alerts' logger.
CREATE TABLE ops.task_definition (
    base_id      text NOT NULL,
    task_key     text NOT NULL,
    fingerprint  text NOT NULL,
    definition   jsonb NOT NULL,
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (base_id, task_key)
);

CREATE TABLE ops.alert (
    alert_id     bigserial PRIMARY KEY,
    raised_at    timestamptz NOT NULL DEFAULT now(),
    kind         text NOT NULL,            -- 'task_changed'
    base_id      text NOT NULL,
    task_key     text,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    acknowledged_at timestamptz
);
CREATE INDEX alert_open_idx ON ops.alert (raised_at) WHERE acknowledged_at IS NULL;
