-- F9: the task log as one row per run (base, task, DAG, window): what the legacy "task
-- log" screen shows. Built from the run-level row each stage writes in ops.task_log.
CREATE VIEW ops.run_summary AS
SELECT base_id, task_key, dag_id, window_start, window_end,
       max(run_id)                                                              AS run_id,
       max(logged_at)                                                           AS last_logged_at,
       coalesce(max((counts->>'files')::int)            FILTER (WHERE stage = 'extract'), 0)     AS files_received,
       coalesce(max((counts->>'failed')::int)           FILTER (WHERE stage = 'extract'), 0)
         + coalesce(max((counts->>'suspended_files')::int) FILTER (WHERE stage = 'validate'), 0) AS files_in_suspense,
       coalesce(max((counts->>'blocks')::int)           FILTER (WHERE stage = 'hash_filter'), 0) AS blocks_received,
       coalesce(max((counts->>'skipped_by_cache')::int) FILTER (WHERE stage = 'hash_filter'), 0) AS skipped_by_cache,
       coalesce(max((counts->>'invalid_blocks')::int)   FILTER (WHERE stage = 'validate'), 0)    AS invalid_blocks,
       coalesce(max((counts->>'anomalies')::int)        FILTER (WHERE stage = 'validate'), 0)    AS anomalies,
       coalesce(max((counts->>'loaded')::int)           FILTER (WHERE stage = 'load'), 0)        AS blocks_loaded,
       coalesce(max((counts->>'matched')::int)          FILTER (WHERE stage = 'match'), 0)       AS students_matched,
       coalesce(max((counts->>'students_with_conflicts')::int) FILTER (WHERE stage = 'conflicts'), 0)
                                                                                AS matched_with_conflicts,
       coalesce(max((counts->>'unmatched')::int)        FILTER (WHERE stage = 'match'), 0)       AS unmatched,
       count(*) FILTER (WHERE level = 'error')                                  AS errors,
       string_agg(DISTINCT stage, ',')                                          AS stages_done
  FROM ops.task_log
 WHERE file_id IS NULL
 GROUP BY base_id, task_key, dag_id, window_start, window_end;
