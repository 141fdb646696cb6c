-- Match stage (issue 15): the LA's name-frequency totals for the term-frequency adjustment
-- (children with a name, and the sum of squared counts per name, for forename and surname)
-- were counted over the whole of core.child in every run: two full scans per run, growing
-- with the LA. They are now cached per state of core.child.
--
-- core.child_change: one row per transaction that wrote core.child (a statement trigger;
-- TRUNCATE included). Rows are only ever added, so the number of rows a snapshot sees names
-- the committed state of core.child exactly; no row lock is shared between writers.
CREATE TABLE core.child_change (
    xid        xid8        PRIMARY KEY,
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION core.note_child_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO core.child_change (xid) VALUES (pg_current_xact_id()) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER child_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON core.child
    FOR EACH STATEMENT EXECUTE FUNCTION core.note_child_change();

-- the totals per state (the number of core.child_change rows when they were counted)
CREATE TABLE core.child_name_totals (
    changes bigint NOT NULL,
    col     text   NOT NULL,           -- 'fn' (m_fn) or 'sn' (m_sn)
    n       bigint NOT NULL,           -- children with a value
    sq      bigint NOT NULL,           -- sum over values of count squared
    PRIMARY KEY (changes, col)
);

-- The totals for the state this statement sees: the cached row, else counted (one statement:
-- the state counted and its key come from one snapshot) and cached; older states pruned.
CREATE FUNCTION core.child_name_totals() RETURNS TABLE (col text, n bigint, sq bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT t.col, t.n, t.sq FROM core.child_name_totals t
                  WHERE t.changes = (SELECT count(*) FROM core.child_change);
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        WITH k AS (SELECT count(*) AS changes FROM core.child_change),
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
    DELETE FROM core.child_name_totals t WHERE t.changes < (SELECT count(*) FROM core.child_change);
END $$;
