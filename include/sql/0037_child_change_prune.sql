-- Delete Files (F18/F44) prunes core.child_change (migration 0033), which gained one row per
-- transaction that wrote core.child and was never pruned; every match run counted it.
--
-- The state of core.child that the cached name totals are keyed on is now the number of
-- changes ever noted: the rows still in core.child_change plus those pruned, read in one
-- snapshot. Pruning deletes the rows it sees and adds their count to core.child_change_pruned
-- in one statement, so the state number of a committed core.child never changes and is never
-- reused (a stale cached total can never be taken for a later state).
CREATE TABLE core.child_change_pruned (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    changes  bigint  NOT NULL DEFAULT 0
);
INSERT INTO core.child_change_pruned DEFAULT VALUES;

-- The state this statement sees (STABLE: the calling statement's snapshot).
CREATE FUNCTION core.child_state() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (SELECT p.changes FROM core.child_change_pruned p) + (SELECT count(*) FROM core.child_change)
$$;

-- Prune the noted changes; returns how many rows were removed.
CREATE FUNCTION core.prune_child_change() RETURNS bigint
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (DELETE FROM core.child_change RETURNING 1),
    n AS (SELECT count(*) AS n FROM gone)
    UPDATE core.child_change_pruned p SET changes = p.changes + n.n FROM n RETURNING n.n
$$;

CREATE OR REPLACE FUNCTION core.child_name_totals() RETURNS TABLE (col text, n bigint, sq bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT t.col, t.n, t.sq FROM core.child_name_totals t WHERE t.changes = core.child_state();
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        WITH k AS (SELECT core.child_state() AS changes),
        tot AS (
            SELECT 'fn'::text AS col, coalesce(sum(c), 0)::bigint AS n, coalesce(sum(c * c), 0)::bigint AS sq
              FROM (SELECT count(*) AS c FROM core.child WHERE m_fn <> '' GROUP BY m_fn) x
            UNION ALL
            SELECT 'sn'::text, coalesce(sum(c), 0)::bigint, coalesce(sum(c * c), 0)::bigint
              FROM (SELECT count(*) AS c FROM core.child WHERE m_sn <> '' GROUP BY m_sn) x),
        ins AS (
            INSERT INTO core.child_name_totals (changes, col, n, sq)
            SELECT k.changes, tot.col, tot.n, tot.sq FROM k, tot
            ON CONFLICT DO NOTHING)
        SELECT tot.col, tot.n, tot.sq FROM tot;
    DELETE FROM core.child_name_totals t WHERE t.changes < core.child_state();
END $$;

