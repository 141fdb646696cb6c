-- Match stage (issue 15, F14): the carers' name counts (0042) were cached per state of
-- core.child and core.adult. Every school's apply changes core.child, so in a snapshot every
-- run counted the whole carer population again (~5 ms a run at 80k children, ~45 ms with 50k
-- LA adults). The counts are now kept up to date instead: each statement that writes
-- core.child or core.adult notes the names it moved (core.person_name_delta: a few rows, only
-- where a name, birth date or "active" changed), and a read adds the notes not yet folded to
-- the kept counts. The same counts as 0042's in every case: the kept counts and the notes
-- they have not folded are read in one snapshot, a transaction reads its own notes, and a
-- rolled-back transaction or savepoint takes its notes with it.

-- The names a statement moved: +n for the people now bearing (col, name), -n for those who
-- no longer do; a child with its birth date and "active" (the carer population is the active
-- children born on or before the cut, and every adult). Only ever inserted by the triggers,
-- and deleted when folded into the kept counts (core.fold_carer_names).
CREATE TABLE core.person_name_delta (
    kind   "char"  NOT NULL CHECK (kind IN ('c', 'a')),    -- core.child, core.adult
    active boolean NOT NULL,
    dob    date,
    col    text    NOT NULL CHECK (col IN ('fn', 'sn')),  -- m_fn, m_sn
    name   text    NOT NULL,
    n      bigint  NOT NULL
);

-- The kept counts per birth-date cut (children born on or before it are carers: the window's
-- date less CARER_MIN years), and their totals (people with a value, sum of squared counts).
-- Each includes exactly the notes deleted from core.person_name_delta when it was counted or
-- folded; only core.fold_carer_names writes them, one transaction at a time.
CREATE TABLE core.carer_name_kept (
    born_by date   NOT NULL,
    col     text   NOT NULL,
    name    text   NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (born_by, col, name)
);
CREATE TABLE core.carer_name_kept_totals (
    born_by date   NOT NULL,
    col     text   NOT NULL,
    n       bigint NOT NULL,
    sq      bigint NOT NULL,
    PRIMARY KEY (born_by, col)
);

-- The notes: one INSERT per writing statement, its old and new rows netted per (name, birth
-- date, active), so an update that moves no name, birth date or "active" writes nothing.
CREATE FUNCTION core.note_child_names() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO core.person_name_delta (kind, active, dob, col, name, n)
        SELECT 'c', x.active, x.dob, x.col, x.name, count(*) FROM (
            SELECT r.active, r.dob, 'fn' AS col, r.m_fn AS name FROM new_rows r WHERE r.m_fn <> ''
            UNION ALL
            SELECT r.active, r.dob, 'sn', r.m_sn FROM new_rows r WHERE r.m_sn <> '') x
         GROUP BY 2, 3, 4, 5;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO core.person_name_delta (kind, active, dob, col, name, n)
        SELECT 'c', x.active, x.dob, x.col, x.name, -count(*) FROM (
            SELECT r.active, r.dob, 'fn' AS col, r.m_fn AS name FROM old_rows r WHERE r.m_fn <> ''
            UNION ALL
            SELECT r.active, r.dob, 'sn', r.m_sn FROM old_rows r WHERE r.m_sn <> '') x
         GROUP BY 2, 3, 4, 5;
    ELSE
        INSERT INTO core.person_name_delta (kind, active, dob, col, name, n)
        SELECT 'c', x.active, x.dob, x.col, x.name, sum(x.d) FROM (
            SELECT r.active, r.dob, 'fn' AS col, r.m_fn AS name, 1 AS d FROM new_rows r WHERE r.m_fn <> ''
            UNION ALL
            SELECT r.active, r.dob, 'sn', r.m_sn, 1 FROM new_rows r WHERE r.m_sn <> ''
            UNION ALL
            SELECT r.active, r.dob, 'fn', r.m_fn, -1 FROM old_rows r WHERE r.m_fn <> ''
            UNION ALL
            SELECT r.active, r.dob, 'sn', r.m_sn, -1 FROM old_rows r WHERE r.m_sn <> '') x
         GROUP BY 2, 3, 4, 5 HAVING sum(x.d) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION core.note_adult_names() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO core.person_name_delta (kind, active, dob, col, name, n)
        SELECT 'a', true, NULL, x.col, x.name, count(*) FROM (
            SELECT 'fn' AS col, r.m_fn AS name FROM new_rows r WHERE r.m_fn <> ''
            UNION ALL
            SELECT 'sn', r.m_sn FROM new_rows r WHERE r.m_sn <> '') x
         GROUP BY 4, 5;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO core.person_name_delta (kind, active, dob, col, name, n)
        SELECT 'a', true, NULL, x.col, x.name, -count(*) FROM (
            SELECT 'fn' AS col, r.m_fn AS name FROM old_rows r WHERE r.m_fn <> ''
            UNION ALL
            SELECT 'sn', r.m_sn FROM old_rows r WHERE r.m_sn <> '') x
         GROUP BY 4, 5;
    ELSE
        INSERT INTO core.person_name_delta (kind, active, dob, col, name, n)
        SELECT 'a', true, NULL, x.col, x.name, sum(x.d) FROM (
            SELECT 'fn' AS col, r.m_fn AS name, 1 AS d FROM new_rows r WHERE r.m_fn <> ''
            UNION ALL
            SELECT 'sn', r.m_sn, 1 FROM new_rows r WHERE r.m_sn <> ''
            UNION ALL
            SELECT 'fn', r.m_fn, -1 FROM old_rows r WHERE r.m_fn <> ''
            UNION ALL
            SELECT 'sn', r.m_sn, -1 FROM old_rows r WHERE r.m_sn <> '') x
         GROUP BY 4, 5 HAVING sum(x.d) <> 0;
    END IF;
    RETURN NULL;
END $$;

-- (a trigger with transition tables has one event)
CREATE TRIGGER child_names_ins AFTER INSERT ON core.child REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION core.note_child_names();
CREATE TRIGGER child_names_upd AFTER UPDATE ON core.child REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION core.note_child_names();
CREATE TRIGGER child_names_del AFTER DELETE ON core.child REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION core.note_child_names();
CREATE TRIGGER adult_names_ins AFTER INSERT ON core.adult REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION core.note_adult_names();
CREATE TRIGGER adult_names_upd AFTER UPDATE ON core.adult REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION core.note_adult_names();
CREATE TRIGGER adult_names_del AFTER DELETE ON core.adult REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION core.note_adult_names();

-- TRUNCATE has no rows to note: the kept counts go (the next read counts again); the notes
-- stay (a count deletes every note it sees).
CREATE FUNCTION core.forget_carer_names() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM core.carer_name_kept;
    DELETE FROM core.carer_name_kept_totals;
    RETURN NULL;
END $$;
CREATE TRIGGER child_names_truncate AFTER TRUNCATE ON core.child
    FOR EACH STATEMENT EXECUTE FUNCTION core.forget_carer_names();
CREATE TRIGGER adult_names_truncate AFTER TRUNCATE ON core.adult
    FOR EACH STATEMENT EXECUTE FUNCTION core.forget_carer_names();

-- Fold the notes this statement sees into every kept cut, and (p_count) count the cut p_cut
-- afresh over the whole carer population: one statement, so the notes it deletes are exactly
-- those of the rows it counts. The caller holds the folding lock (one folder at a time) in a
-- READ COMMITTED transaction, so no other transaction deletes a note this one sees; p_cut is
-- not kept when p_count.
CREATE FUNCTION core.fold_carer_names(p_cut date, p_count boolean) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    WITH del AS (DELETE FROM core.person_name_delta RETURNING kind, active, dob, col, name, n),
    cuts AS (SELECT t.born_by FROM core.carer_name_kept_totals t
              WHERE t.col = 'fn' AND NOT (p_count AND t.born_by = p_cut)),
    agg AS (SELECT c.born_by, d.col, d.name, sum(d.n)::bigint AS dn
              FROM cuts c JOIN del d ON d.active AND (d.kind = 'a' OR d.dob <= c.born_by)
             GROUP BY 1, 2, 3 HAVING sum(d.n) <> 0),
    cur AS (SELECT a.born_by, a.col, a.name, a.dn, coalesce(k.n, 0) AS bn
              FROM agg a LEFT JOIN core.carer_name_kept k
                ON k.born_by = a.born_by AND k.col = a.col AND k.name = a.name),
    up AS (INSERT INTO core.carer_name_kept (born_by, col, name, n)
           SELECT cur.born_by, cur.col, cur.name, cur.bn + cur.dn FROM cur
           ON CONFLICT (born_by, col, name) DO UPDATE SET n = excluded.n),
    upt AS (UPDATE core.carer_name_kept_totals t SET n = t.n + s.dn, sq = t.sq + s.dsq
              FROM (SELECT cur.born_by, cur.col, sum(cur.dn) AS dn,
                           sum((cur.bn + cur.dn) * (cur.bn + cur.dn) - cur.bn * cur.bn) AS dsq
                      FROM cur GROUP BY 1, 2) s
             WHERE t.born_by = s.born_by AND t.col = s.col),
    pop AS (SELECT c.m_fn AS fn, c.m_sn AS sn FROM core.child c WHERE p_count AND c.active AND c.dob <= p_cut
            UNION ALL
            SELECT a.m_fn, a.m_sn FROM core.adult a WHERE p_count),
    cnt AS (SELECT 'fn'::text AS col, p.fn AS name, count(*) AS n FROM pop p WHERE p.fn <> '' GROUP BY p.fn
            UNION ALL
            SELECT 'sn'::text, p.sn, count(*) FROM pop p WHERE p.sn <> '' GROUP BY p.sn),
    ins AS (INSERT INTO core.carer_name_kept (born_by, col, name, n)
            SELECT p_cut, cnt.col, cnt.name, cnt.n FROM cnt)
    INSERT INTO core.carer_name_kept_totals (born_by, col, n, sq)
    SELECT p_cut, x.col, coalesce(sum(cnt.n), 0)::bigint, coalesce(sum(cnt.n * cnt.n), 0)::bigint
      FROM (VALUES ('fn'), ('sn')) x(col) LEFT JOIN cnt ON cnt.col = x.col
     WHERE p_count
     GROUP BY x.col
$$;

-- The carer population's counts of these forename and surname keys (rows with a name, n > 0;
-- sq NULL) and its totals (rows without a name), on p_asof with CARER_MIN p_min: the kept
-- counts of the day's cut plus the notes not yet folded, read in one statement. A cut not kept
-- yet is counted and kept (and the notes folded when more than a few hundred wait), by one
-- READ COMMITTED transaction at a time; another transaction meanwhile counts directly.
CREATE FUNCTION core.carer_name_probe(p_asof date, p_min int, p_fn text[], p_sn text[])
RETURNS TABLE (col text, name text, n bigint, sq bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cut date := (p_asof - make_interval(years => p_min))::date;
    kept boolean;
    waiting bigint;
BEGIN
    SELECT EXISTS (SELECT 1 FROM core.carer_name_kept_totals t WHERE t.born_by = cut),
           (SELECT count(*) FROM (SELECT 1 FROM core.person_name_delta LIMIT 501) d)
      INTO kept, waiting;
    IF (NOT kept OR waiting > 500) AND current_setting('transaction_isolation') = 'read committed'
       AND pg_try_advisory_xact_lock(hashtext('core.fold_carer_names')) THEN
        -- (the lock taken, this statement and the next see every fold committed before)
        kept := EXISTS (SELECT 1 FROM core.carer_name_kept_totals t WHERE t.born_by = cut);
        PERFORM core.fold_carer_names(cut, NOT kept);
        -- cuts a week or more away (a replayed window) are counted again when needed
        DELETE FROM core.carer_name_kept k WHERE k.born_by NOT BETWEEN cut - 7 AND cut + 7;
        DELETE FROM core.carer_name_kept_totals k WHERE k.born_by NOT BETWEEN cut - 7 AND cut + 7;
        kept := true;
    END IF;
    IF kept THEN
        -- (one statement: the kept counts and the notes they have not folded, one snapshot)
        RETURN QUERY
            WITH d AS (SELECT x.col, x.name, sum(x.n)::bigint AS dn FROM core.person_name_delta x
                        WHERE x.active AND (x.kind = 'a' OR x.dob <= cut)
                        GROUP BY 1, 2 HAVING sum(x.n) <> 0),
            b AS (SELECT d.col, d.name, d.dn, coalesce(k.n, 0) AS bn FROM d LEFT JOIN core.carer_name_kept k
                    ON k.born_by = cut AND k.col = d.col AND k.name = d.name),
            q AS (SELECT 'fn'::text AS col, unnest(p_fn) AS name UNION SELECT 'sn', unnest(p_sn))
            SELECT t.col, NULL::text, (t.n + coalesce(sum(b.dn), 0))::bigint,
                   (t.sq + coalesce(sum((b.bn + b.dn) * (b.bn + b.dn) - b.bn * b.bn), 0))::bigint
              FROM core.carer_name_kept_totals t LEFT JOIN b ON b.col = t.col
             WHERE t.born_by = cut GROUP BY t.col, t.n, t.sq
            UNION ALL
            SELECT q.col, q.name, coalesce(k.n, 0) + coalesce(d.dn, 0), NULL::bigint
              FROM q LEFT JOIN core.carer_name_kept k ON k.born_by = cut AND k.col = q.col AND k.name = q.name
                     LEFT JOIN d ON d.col = q.col AND d.name = q.name
             WHERE coalesce(k.n, 0) + coalesce(d.dn, 0) > 0;
        IF FOUND THEN  -- (a kept cut always has its two totals rows)
            RETURN;
        END IF;
    END IF;
    -- not kept (another transaction is folding, or not READ COMMITTED): counted directly
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
END $$;
