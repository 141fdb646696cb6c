-- Match stage (issue 15): each run counted its students' names over core.child (two index
-- scans reading every child who bears one of those names: a share of the whole LA per run,
-- growing with it). The counts per name are now cached per state of core.child, as the totals
-- are (0033, 0037): counted once after each change of the LA's children, then read by name.
CREATE TABLE core.child_name_count (
    changes bigint NOT NULL,           -- the state: core.child_state() (migration 0037)
    col     text   NOT NULL,           -- 'fn' (m_fn) or 'sn' (m_sn); '' marks a counted state
    name    text   NOT NULL,
    n       bigint NOT NULL,           -- children bearing it
    PRIMARY KEY (changes, col, name)
);

-- The counts of these forename and surname keys in the state this statement sees. A
-- transaction that has itself changed core.child counts its own state directly (another
-- transaction may have an uncommitted state with the same number of changes), uncached.
CREATE FUNCTION core.child_name_counts(p_fn text[], p_sn text[]) RETURNS TABLE (col text, name text, n bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k bigint;
    mine boolean;
BEGIN
    SELECT core.child_state(), coalesce(bool_or(c.xid = pg_current_xact_id_if_assigned()), false) INTO k, mine
      FROM core.child_change c;
    IF mine THEN
        RETURN QUERY
            SELECT 'fn'::text, c.m_fn, count(*) FROM core.child c WHERE c.m_fn = ANY(p_fn) GROUP BY c.m_fn
            UNION ALL
            SELECT 'sn'::text, c.m_sn, count(*) FROM core.child c WHERE c.m_sn = ANY(p_sn) GROUP BY c.m_sn;
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM core.child_name_count t WHERE t.changes = k AND t.col = '') THEN
        INSERT INTO core.child_name_count (changes, col, name, n)
        SELECT k, 'fn', c.m_fn, count(*) FROM core.child c WHERE c.m_fn <> '' GROUP BY c.m_fn
        UNION ALL
        SELECT k, 'sn', c.m_sn, count(*) FROM core.child c WHERE c.m_sn <> '' GROUP BY c.m_sn
        UNION ALL
        SELECT k, '', '', 0
        ON CONFLICT DO NOTHING;
        DELETE FROM core.child_name_count t WHERE t.changes < k;
    END IF;
    RETURN QUERY SELECT t.col, t.name, t.n FROM core.child_name_count t
                  WHERE t.changes = k AND ((t.col = 'fn' AND t.name = ANY(p_fn)) OR (t.col = 'sn' AND t.name = ANY(p_sn)));
END $$;
