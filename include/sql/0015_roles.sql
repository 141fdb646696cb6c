-- 0015 (issue 10 part 3, F41): least-privilege roles. Applied by an admin (a superuser or a
-- role with CREATEROLE that is a member of b2b_pipeline); nothing needs a superuser at run time.
--
--   b2b_pipeline  owns the five schemas and everything in them: the DAGs connect as it.
--   b2b_analyst   reads core, results and the documented ops views; no raw payloads, no
--                 staging, no settings or hash cache; writes nothing.
--   b2b_officer   an analyst who can also act on the lists, ONLY through the SECURITY DEFINER
--                 functions below, which record session_user (the officer's own login).
--   b2b_ui        the review screens' service login: an officer that may pass the web user it
--                 acts for (p_web_user); recorded as '<web user> via <login>'.
-- Passwords are not set here: `b2b db roles` (b2b.db.ensure_roles) sets them, and LA staff get
-- personal logins that are members of b2b_analyst / b2b_officer (docs/using-for-your-la.md).
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['b2b_pipeline', 'b2b_analyst', 'b2b_officer', 'b2b_ui'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT', r);
        END IF;
    END LOOP;
    -- officers inherit what analysts may read; the UI login is an officer
    IF NOT pg_has_role('b2b_officer', 'b2b_analyst', 'MEMBER') THEN
        GRANT b2b_analyst TO b2b_officer;
    END IF;
    IF NOT pg_has_role('b2b_ui', 'b2b_officer', 'MEMBER') THEN
        GRANT b2b_officer TO b2b_ui;
    END IF;
    -- the migrating admin must be able to hand objects to b2b_pipeline (PG16 CREATEROLE admins)
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, 'b2b_pipeline', 'MEMBER') THEN
        EXECUTE format('GRANT b2b_pipeline TO %I', current_user);
    END IF;
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO b2b_pipeline, b2b_analyst, b2b_officer, b2b_ui',
                   current_database());
END $$;

-- Who is acting: the session's login, or the web user the b2b_ui login acts for.
CREATE FUNCTION results.officer_identity(p_web_user text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_web_user IS NULL THEN
        RETURN session_user::text;
    END IF;
    IF NOT pg_has_role(session_user, 'b2b_ui', 'MEMBER') THEN
        RAISE EXCEPTION 'only the review screens'' login (a member of b2b_ui) may act for a web user; '
                        'your decisions are recorded under your own login %', session_user
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF length(btrim(p_web_user)) = 0 OR length(p_web_user) > 200 OR p_web_user ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'the web user must be a non-empty name of at most 200 printable characters'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN btrim(p_web_user) || ' via ' || session_user::text;
END $$;

CREATE FUNCTION results._officer_file(p_base text, p_student text) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE fid bigint;
BEGIN
    SELECT m.file_id INTO fid FROM results.current_match m WHERE m.base_id = p_base AND m.student_guid = p_student;
    IF fid IS NULL THEN
        RAISE EXCEPTION 'base %: no imported student %', p_base, p_student USING ERRCODE = 'no_data_found';
    END IF;
    RETURN fid;
END $$;

-- Link a school student to an LA child: confirm a proposed candidate, or by hand.
CREATE FUNCTION results.officer_link(p_base text, p_student text, p_person text, p_decision text DEFAULT 'link',
                                     p_note text DEFAULT NULL, p_web_user text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE who text := results.officer_identity(p_web_user);
        fid bigint := results._officer_file(p_base, p_student);
BEGIN
    IF p_decision NOT IN ('link', 'confirm', 'new_child') THEN
        RAISE EXCEPTION 'decision must be link or confirm' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM core.child WHERE person_id = p_person) THEN
        RAISE EXCEPTION 'no LA child %', p_person USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM core.child WHERE person_id = p_person AND active) THEN
        RAISE EXCEPTION 'LA child % is inactive (no longer in the LA''s records)', p_person
              USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO results.match_decision (base_id, student_guid, person_id, decision, decided_by, note)
    VALUES (p_base, p_student, p_person, p_decision, who, p_note);
    INSERT INTO core.child_link (base_id, student_guid, person_id, linked_by, file_id)
    VALUES (p_base, p_student, p_person, 'officer', NULL)
    ON CONFLICT (base_id, student_guid) DO UPDATE
       SET person_id = EXCLUDED.person_id, linked_by = 'officer', file_id = NULL, linked_at = now();
    UPDATE results.match SET person_id = p_person, status = 'matched', rule = 'officer_link', hidden = false,
           explanation = explanation || jsonb_build_object('officer', who)
     WHERE file_id = fid AND student_guid = p_student;
    RETURN who;
END $$;

-- This candidate is not the child: never proposed again; the student returns to Unmatched.
CREATE FUNCTION results.officer_reject(p_base text, p_student text, p_person text, p_note text DEFAULT NULL,
                                       p_web_user text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE who text := results.officer_identity(p_web_user);
        fid bigint := results._officer_file(p_base, p_student);
BEGIN
    INSERT INTO results.match_decision (base_id, student_guid, person_id, decision, decided_by, note)
    VALUES (p_base, p_student, p_person, 'reject', who, p_note);
    DELETE FROM core.child_link WHERE base_id = p_base AND student_guid = p_student AND person_id = p_person;
    UPDATE results.match SET person_id = NULL, status = 'unmatched', rule = 'none',
           explanation = explanation || jsonb_build_object('rejected_by', who)
     WHERE file_id = fid AND student_guid = p_student AND person_id = p_person;
    RETURN who;
END $$;

-- Create an LA child from an unmatched school record (id from core.person_id_seq) and link it.
CREATE FUNCTION results.officer_new_child(p_base text, p_student text, p_web_user text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE who text := results.officer_identity(p_web_user);
        fid bigint := results._officer_file(p_base, p_student);
        pid text := core.next_person_id();
        n int;
BEGIN
    INSERT INTO core.child (person_id, upn, forename, middle_names, surname, gender, dob, ethnicity,
                            first_language, home_language, religion, sen_status, ncy, base_id,
                            enrol_status, reg_group, start_date, looked_after, paon, saon, street,
                            locality, town, county, postcode, origin, updated_by)
    SELECT pid, s.upn, s.forename, s.middle_names, s.surname, s.gender, s.dob, s.ethnicity,
           s.first_language, s.home_language, s.religion, s.sen_status, s.ncy, s.base_id,
           s.enrol_status, s.reg_group, s.start_date, s.looked_after, a.paon, a.saon, a.street,
           a.locality, a.town, a.county, a.postcode, 'officer', 'officer:' || who
      FROM staging.student s
      LEFT JOIN LATERAL (SELECT * FROM staging.address a WHERE a.base_id = s.base_id
                           AND a.student_guid = s.student_guid ORDER BY a.file_id DESC LIMIT 1) a ON true
     WHERE s.file_id = fid AND s.student_guid = p_student;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n <> 1 THEN
        RAISE EXCEPTION 'base %: student % has no loaded core block', p_base, p_student USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM results.officer_link(p_base, p_student, pid, 'new_child', NULL, p_web_user);
    RETURN pid;
END $$;

-- Resolve the open conflict(s) on one field of a child: keep the LA value, or accept the
-- incoming one (written to the LA record). Returns how many conflict rows were resolved.
CREATE FUNCTION results.officer_resolve(p_person text, p_field text, p_keep text, p_web_user text DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE who text := results.officer_identity(p_web_user);
        n int;
        val text;
        coltype text;
BEGIN
    IF p_keep NOT IN ('la', 'incoming') THEN
        RAISE EXCEPTION 'keep must be la or incoming' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT format_type(a.atttypid, a.atttypmod) INTO coltype FROM pg_attribute a
     WHERE a.attrelid = 'core.child'::regclass AND a.attname = p_field AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attgenerated = '';
    IF coltype IS NULL OR p_field IN ('person_id', 'origin', 'active', 'version', 'updated_by', 'updated_at') THEN
        RAISE EXCEPTION 'unknown conflict field %', p_field USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT count(*), (array_agg(incoming_value ORDER BY last_seen DESC))[1] INTO n, val
      FROM results.conflict WHERE person_id = p_person AND field = p_field;
    IF n = 0 THEN
        RAISE EXCEPTION 'child %: no open conflict on %', p_person, p_field USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO results.conflict_resolution (person_id, field, la_value, incoming_value, resolution, resolved_by)
    SELECT person_id, field, la_value, incoming_value,
           CASE p_keep WHEN 'la' THEN 'kept_la' ELSE 'accepted_incoming' END, who
      FROM results.conflict WHERE person_id = p_person AND field = p_field
    ON CONFLICT DO NOTHING;
    IF p_keep = 'incoming' THEN
        EXECUTE format('UPDATE core.child SET %I = CAST($1 AS %s), updated_at = now(), updated_by = $2 '
                       'WHERE person_id = $3', p_field, coltype)
          USING val, 'officer:' || who, p_person;
    END IF;
    RETURN n;
END $$;

-- Ownership and grants for every object in the five schemas; b2b.db.upgrade runs it after
-- each upgrade, so tables added by later migrations get the same rules.
CREATE FUNCTION ops.apply_role_grants() RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record;
        s text;
        cols text;
BEGIN
    FOREACH s IN ARRAY ARRAY['raw', 'staging', 'core', 'results', 'ops'] LOOP
        IF (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = s) <> 'b2b_pipeline' THEN
            EXECUTE format('ALTER SCHEMA %I OWNER TO b2b_pipeline', s);
        END IF;
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', s);
    END LOOP;
    FOR r IN SELECT c.oid::regclass::text AS obj, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname IN ('raw', 'staging', 'core', 'results', 'ops')
                AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                AND pg_get_userbyid(c.relowner) <> 'b2b_pipeline'
                AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid
                                                        AND d.deptype IN ('a', 'i')))
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO b2b_pipeline',
                       CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                                      WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.obj);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure::text AS obj FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname IN ('raw', 'staging', 'core', 'results', 'ops')
                AND pg_get_userbyid(p.proowner) <> 'b2b_pipeline'
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO b2b_pipeline', r.obj);
    END LOOP;
    -- analysts: core, results and the documented ops views; nothing else, write nothing
    GRANT USAGE ON SCHEMA core, results, ops TO b2b_analyst;
    GRANT SELECT ON ALL TABLES IN SCHEMA core, results TO b2b_analyst;
    FOREACH s IN ARRAY ARRAY['ops.task_log', 'ops.run_summary', 'ops.alert', 'ops.schema_migrations'] LOOP
        IF to_regclass(s) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT ON %s TO b2b_analyst', s);
        END IF;
    END LOOP;
    -- officers also see the school records behind the lists (staging) and the files' metadata,
    -- never a payload or a parsed block
    GRANT USAGE ON SCHEMA staging, raw TO b2b_officer;
    GRANT SELECT ON ALL TABLES IN SCHEMA staging TO b2b_officer;
    FOR r IN SELECT c.oid::regclass::text AS obj FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'raw' AND c.relkind IN ('r', 'p')
    LOOP
        SELECT string_agg(quote_ident(a.attname), ', ') INTO cols FROM pg_attribute a
         WHERE a.attrelid = r.obj::regclass AND a.attnum > 0 AND NOT a.attisdropped
           AND a.atttypid NOT IN ('bytea'::regtype, 'jsonb'::regtype, 'json'::regtype);
        IF cols IS NOT NULL THEN
            EXECUTE format('GRANT SELECT (%s) ON %s TO b2b_officer', cols, r.obj);
        END IF;
    END LOOP;
    -- the officer functions: no one else may call them
    FOR r IN SELECT p.oid::regprocedure::text AS obj FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'results' AND (p.proname LIKE 'officer\_%' OR p.proname LIKE '\_officer\_%')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', r.obj);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO b2b_officer', r.obj);
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION ops.apply_role_grants() FROM PUBLIC;
