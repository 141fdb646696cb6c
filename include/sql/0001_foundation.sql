-- 0001 foundation: schemas, inbound messages (raw), parsed blocks, task log (ops).
-- Schemas: raw = what schools sent, as received; staging = typed rows per block type;
-- core = the LA's own child records ("One"); results = matches, conflicts, anomalies;
-- ops = task log, hash cache, settings, migrations.
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS core;
CREATE SCHEMA IF NOT EXISTS results;
CREATE SCHEMA IF NOT EXISTS ops;

-- One row per message received from a school: a SIMS 7 XML export, or one page of a
-- SIMS Primary data group. The payload is kept until the Delete Files maintenance
-- task purges it (F18); the row itself stays as the audit trail.
CREATE TABLE raw.inbound_file (
    file_id       bigserial PRIMARY KEY,
    base_id       text        NOT NULL,            -- DfE number, e.g. 8862001
    task_key      text        NOT NULL,            -- catalogue task key
    dag_id        text        NOT NULL,
    run_id        text        NOT NULL,            -- the Airflow run that received it
    window_start  timestamptz,                     -- null for a snapshot
    window_end    timestamptz NOT NULL,
    window_order  text        NOT NULL,            -- 'YYYYMMDDHHMMSS|dag_id' (UTC): orders windows
    seq           int         NOT NULL,            -- 1.. within the run (SIMS Primary pages)
    source        text        NOT NULL CHECK (source IN ('sims7', 'sims_primary')),
    data_filter   text        NOT NULL,
    label         text        NOT NULL,            -- e.g. 'export', 'sen p2/3'
    content_type  text        NOT NULL,
    payload       bytea,                           -- null once purged
    size_bytes    int         NOT NULL,
    sha256        text        NOT NULL,
    status        text        NOT NULL DEFAULT 'received'
                  CHECK (status IN ('received', 'parsed', 'failed', 'suspense', 'loaded')),
    error         text,                            -- why it failed (no personal data)
    pupils        int,
    blocks        int,
    received_at   timestamptz NOT NULL DEFAULT now(),
    purged_at     timestamptz,
    UNIQUE (dag_id, window_end, seq)
);
CREATE INDEX inbound_file_base_idx ON raw.inbound_file (base_id, received_at);
CREATE INDEX inbound_file_status_idx ON raw.inbound_file (status) WHERE status IN ('failed', 'suspense');

-- The typed data blocks parsed out of a message, in the canonical block model
-- (docs/protocol.md). One row per (file, student, block type).
CREATE TABLE raw.inbound_block (
    file_id       bigint NOT NULL REFERENCES raw.inbound_file (file_id) ON DELETE CASCADE,
    ordinal       int    NOT NULL,                 -- order within the file
    base_id       text   NOT NULL,
    block_type    text   NOT NULL CHECK (block_type IN
                  ('student', 'address', 'contacts', 'sen', 'exclusions', 'attendance', 'attainment')),
    student_guid  text   NOT NULL,
    content       jsonb  NOT NULL,
    PRIMARY KEY (file_id, ordinal)
);
CREATE INDEX inbound_block_student_idx ON raw.inbound_block (base_id, student_guid, block_type);

-- Task log (F9): per base, task, run and file, what happened and the counts.
CREATE TABLE ops.task_log (
    log_id        bigserial PRIMARY KEY,
    logged_at     timestamptz NOT NULL DEFAULT now(),
    base_id       text        NOT NULL,
    task_key      text        NOT NULL,
    dag_id        text        NOT NULL,
    run_id        text        NOT NULL,
    window_start  timestamptz,
    window_end    timestamptz NOT NULL,
    file_id       bigint REFERENCES raw.inbound_file (file_id) ON DELETE CASCADE,
    stage         text        NOT NULL,            -- extract, hash_filter, validate, load, match, ...
    level         text        NOT NULL CHECK (level IN ('info', 'warning', 'error')),
    message       text        NOT NULL,
    counts        jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX task_log_base_idx ON ops.task_log (base_id, logged_at);
CREATE INDEX task_log_window_idx ON ops.task_log (dag_id, window_end, stage);
