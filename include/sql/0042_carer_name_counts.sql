-- Match stage (issue 15, F14): the carers' name frequencies (the term-frequency adjustment the
-- matcher gives a contact's forename and surname) were counted in every run over the people
-- sharing a contact's surname or home postcode: a scan of a share of the LA per run, growing
-- with it. They are now counted over the whole carer population (every LA adult, and every
-- active LA child at least CARER_MIN years old on the day), cached per state of core.child,
-- state of core.adult and birth-date cut, and read by name.

-- The adults' matching keys, normalised as core.child's (0010) and b2b.matching's name_key /
-- postcode_key, so the counts and the candidate query read an adult as the matcher does.
ALTER TABLE core.adult
    ADD COLUMN m_sn text GENERATED ALWAYS AS (regexp_replace(translate(lower(surname), 'àáâãäåāăąçćčďèéêëēėęěğìíîïīįıłñńňòóôõöøōőŕřśšşťùúûüūůűųýÿžźż', 'aaaaaaaaacccdeeeeeeeegiiiiiiilnnnoooooooorrssstuuuuuuuuyyzzz'), '[^a-z]', '', 'g')) STORED,
    ADD COLUMN m_fn text GENERATED ALWAYS AS (regexp_replace(translate(lower(forename), 'àáâãäåāăąçćčďèéêëēėęěğìíîïīįıłñńňòóôõöøōőŕřśšşťùúûüūůűųýÿžźż', 'aaaaaaaaacccdeeeeeeeegiiiiiiilnnnoooooooorrssstuuuuuuuuyyzzz'), '[^a-z]', '', 'g')) STORED,
    ADD COLUMN m_pc text GENERATED ALWAYS AS (upper(regexp_replace(postcode, '[^A-Za-z0-9]', '', 'g'))) STORED;
CREATE INDEX adult_m_fn_sn_idx ON core.adult (m_fn, m_sn);
CREATE INDEX adult_m_pc_idx ON core.adult (m_pc);
-- (the candidate query reads adults by these keys now: 0029's expression indexes go)
DROP INDEX IF EXISTS core.adult_norm_surname_idx;
DROP INDEX IF EXISTS core.adult_norm_postcode_idx;

-- The state of core.adult: a counter every statement that writes it raises. Only the LA's
-- adult loads write core.adult (one transaction each, nightly), so one row suffices (a writer
-- holds it until it commits); a rolled-back change leaves it as it was, so a committed number
-- is never reused for another committed state.
CREATE TABLE core.adult_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    changes  bigint  NOT NULL DEFAULT 0
);
INSERT INTO core.adult_version DEFAULT VALUES;

-- A transaction that writes core.child or core.adult says so in a transaction-local setting
-- (undone with the transaction, or with the savepoint that wrote): such a transaction sees a
-- state of its own, which it must never cache (0038 asks core.child_change for its xid instead,
-- which a prune in the same transaction would hide).
CREATE FUNCTION core.note_adult_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE core.adult_version SET changes = changes + 1;
    PERFORM set_config('b2b.people_changed', 'on', true);
    RETURN NULL;
END $$;

CREATE TRIGGER adult_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON core.adult
    FOR EACH STATEMENT EXECUTE FUNCTION core.note_adult_change();

CREATE OR REPLACE FUNCTION core.note_child_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO core.child_change (xid) VALUES (pg_current_xact_id()) ON CONFLICT DO NOTHING;
    PERFORM set_config('b2b.people_changed', 'on', true);
    RETURN NULL;
END $$;

-- The counts per name and the totals (people with a value, sum of squared counts), per state:
-- core.child_state() (0037), core.adult_version.changes, and the birth-date cut (children born
-- on or before it are carers: the window's date less CARER_MIN years).
CREATE TABLE core.carer_name_totals (
    child_state bigint NOT NULL,
    adult_state bigint NOT NULL,
    born_by     date   NOT NULL,
    col         text   NOT NULL,       -- 'fn' (m_fn) or 'sn' (m_sn)
    n           bigint NOT NULL,
    sq          bigint NOT NULL,
    PRIMARY KEY (child_state, adult_state, born_by, col)
);
CREATE TABLE core.carer_name_count (
    child_state bigint NOT NULL,
    adult_state bigint NOT NULL,
    born_by     date   NOT NULL,
    col         text   NOT NULL,
    name        text   NOT NULL,
    n           bigint NOT NULL,       -- carers bearing it
    PRIMARY KEY (child_state, adult_state, born_by, col, name)
);

-- The carer population's counts of these forename and surname keys (rows with a name; sq
-- NULL) and its totals (rows without a name), on p_asof with CARER_MIN p_min. Counted and
-- cached once per state; every other call reads the cache by name. Counted directly, uncached:
-- in a transaction that has itself changed core.child or core.adult (another transaction may
-- hold an uncommitted state with the same number), and while another transaction is caching
-- (it holds the lock until it commits: no wait, no two writers of one state).
CREATE FUNCTION core.carer_name_counts(p_asof date, p_min int, p_fn text[], p_sn text[])
RETURNS TABLE (col text, name text, n bigint, sq bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cut date := (p_asof - make_interval(years => p_min))::date;
    mine boolean := coalesce(current_setting('b2b.people_changed', true), '') = 'on';
BEGIN
    IF NOT mine THEN
        -- (one statement: the state and the rows read from one snapshot)
        RETURN QUERY
            WITH k AS (SELECT core.child_state() AS cs, (SELECT v.changes FROM core.adult_version v) AS a)
            SELECT t.col, NULL::text, t.n, t.sq FROM core.carer_name_totals t, k
             WHERE t.child_state = k.cs AND t.adult_state = k.a AND t.born_by = cut
            UNION ALL
            SELECT t.col, t.name, t.n, NULL::bigint FROM core.carer_name_count t, k
             WHERE t.child_state = k.cs AND t.adult_state = k.a AND t.born_by = cut
               AND (t.col, t.name) IN (SELECT 'fn', unnest(p_fn) UNION ALL SELECT 'sn', unnest(p_sn));
        IF FOUND THEN  -- (a counted state always has its two totals rows)
            RETURN;
        END IF;
    END IF;
    IF mine OR NOT pg_try_advisory_xact_lock(hashtext('core.carer_name_counts')) THEN
        RETURN QUERY
            WITH pop AS (
                SELECT c.m_fn AS fn, c.m_sn AS sn FROM core.child c WHERE c.active AND c.dob <= cut
                UNION ALL
                SELECT a.m_fn, a.m_sn FROM core.adult a),
            cnt AS (SELECT 'fn'::text AS col, p.fn AS name, count(*) AS n FROM pop p WHERE p.fn <> '' GROUP BY p.fn
                    UNION ALL
                    SELECT 'sn'::text, p.sn, count(*) FROM pop p WHERE p.sn <> '' GROUP BY p.sn)
            SELECT x.col, NULL::text, coalesce(sum(cnt.n), 0)::bigint, coalesce(sum(cnt.n * cnt.n), 0)::bigint
              FROM (VALUES ('fn'), ('sn')) x(col) LEFT JOIN cnt ON cnt.col = x.col GROUP BY x.col
            UNION ALL
            SELECT cnt.col, cnt.name, cnt.n, NULL::bigint FROM cnt
             WHERE (cnt.col, cnt.name) IN (SELECT 'fn', unnest(p_fn) UNION ALL SELECT 'sn', unnest(p_sn));
        RETURN;
    END IF;
    -- counted and cached in one statement (the state it is keyed on and the rows it counts come
    -- from one snapshot), then older states pruned
    RETURN QUERY
        WITH k AS (SELECT core.child_state() AS cs, (SELECT v.changes FROM core.adult_version v) AS a),
        pop AS (
            SELECT c.m_fn AS fn, c.m_sn AS sn FROM core.child c WHERE c.active AND c.dob <= cut
            UNION ALL
            SELECT a.m_fn, a.m_sn FROM core.adult a),
        cnt AS (SELECT 'fn'::text AS col, p.fn AS name, count(*) AS n FROM pop p WHERE p.fn <> '' GROUP BY p.fn
                UNION ALL
                SELECT 'sn'::text, p.sn, count(*) FROM pop p WHERE p.sn <> '' GROUP BY p.sn),
        tot AS (SELECT x.col, coalesce(sum(cnt.n), 0)::bigint AS n, coalesce(sum(cnt.n * cnt.n), 0)::bigint AS sq
                  FROM (VALUES ('fn'), ('sn')) x(col) LEFT JOIN cnt ON cnt.col = x.col GROUP BY x.col),
        ins_c AS (INSERT INTO core.carer_name_count (child_state, adult_state, born_by, col, name, n)
                  SELECT k.cs, k.a, cut, cnt.col, cnt.name, cnt.n FROM k, cnt ON CONFLICT DO NOTHING),
        ins_t AS (INSERT INTO core.carer_name_totals (child_state, adult_state, born_by, col, n, sq)
                  SELECT k.cs, k.a, cut, tot.col, tot.n, tot.sq FROM k, tot ON CONFLICT DO NOTHING)
        SELECT tot.col, NULL::text, tot.n, tot.sq FROM tot
        UNION ALL
        SELECT cnt.col, cnt.name, cnt.n, NULL::bigint FROM cnt
         WHERE (cnt.col, cnt.name) IN (SELECT 'fn', unnest(p_fn) UNION ALL SELECT 'sn', unnest(p_sn));
    -- states older than the current one are never read again; other cuts a week or more away
    -- (a replayed window) are counted again when needed
    WITH k AS (SELECT core.child_state() AS cs, (SELECT v.changes FROM core.adult_version v) AS a),
    t AS (DELETE FROM core.carer_name_totals t USING k
           WHERE t.child_state < k.cs OR t.adult_state < k.a OR t.born_by NOT BETWEEN cut - 7 AND cut + 7)
    DELETE FROM core.carer_name_count t USING k
     WHERE t.child_state < k.cs OR t.adult_state < k.a OR t.born_by NOT BETWEEN cut - 7 AND cut + 7;
END $$;
