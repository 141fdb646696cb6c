-- 0012 (issue 9: trustworthy runs). Run-level guarantees:
--  * a hash-cache entry counts only once the run that wrote it has finished successfully
--    (``committed``, set by the run's final ``commit`` stage); entries already stored count;
--  * ops.run: one row per run window of a (base, task) DAG, with the window it asked for
--    (a rerun asks the same again) and its state;
--  * ops.base_lease: at most one run per base at a time, across all of the base's DAGs;
--  * ops.watermark: per (base, task), the end of the last successful window (F5 "since the
--    last successful run").
ALTER TABLE ops.hash_cache ADD COLUMN committed boolean NOT NULL DEFAULT true;
ALTER TABLE ops.hash_cache ALTER COLUMN committed SET DEFAULT false;

CREATE TABLE ops.run (
    dag_id        text NOT NULL,
    window_end    timestamptz NOT NULL,
    base_id       text NOT NULL,
    task_key      text NOT NULL,
    run_id        text NOT NULL,
    window_start  timestamptz,             -- what the run asked the school for (NULL = everything)
    previous_end  timestamptz,             -- the end of the DAG's previous window (its predecessor)
    window_order  text NOT NULL,
    state         text NOT NULL CHECK (state IN ('waiting', 'running', 'success', 'failed')),
    waiting_since timestamptz NOT NULL DEFAULT now(),  -- when this attempt first asked for the lease
    registered_at timestamptz NOT NULL DEFAULT now(),  -- heartbeat of a waiting run
    finished_at   timestamptz,
    PRIMARY KEY (dag_id, window_end)
);
CREATE INDEX run_base_idx ON ops.run (base_id, state, window_order);

CREATE TABLE ops.base_lease (
    base_id      text PRIMARY KEY,
    dag_id       text NOT NULL,
    window_end   timestamptz NOT NULL,
    run_id       text NOT NULL,
    taken_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ops.watermark (
    base_id     text NOT NULL,
    task_key    text NOT NULL,
    window_end  timestamptz NOT NULL,
    dag_id      text NOT NULL,
    run_id      text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (base_id, task_key)
);
