-- Fault sweep (officer decisions): two officers deciding one school student at once, or a
-- decision made on a list a newer run has since changed, no longer overwrite each other.
--   * Every decision on a school student takes a transaction lock on that student first and
--     reads its state afterwards (READ COMMITTED: each statement sees what committed before
--     it), so the second of two decisions sees the first.
--   * confirm: only while the student's latest match is still a possible one (one of its
--     candidates); a newer run that re-decided the student (matched, unmatched), or another
--     officer's reject, is an error naming what the student is now (before: the stale
--     confirm silently replaced it; 'link' is the deliberate override).
--   * link / confirm: a student an officer already linked to another child is refused
--     (reject that link first: a correction is a decision of its own); linked to this very
--     child already, an error saying so (no second decision).
--   * new_child: refused once the student is linked to a child (the second click made a
--     second LA child for the same pupil).
--   * reject: serialised too (a confirm and a reject at once left the link of the one and
--     the 'unmatched' of the other).
--   * resolve: a transaction lock on (child, field), then the open conflicts are read, so
--     the second of two resolutions finds none (before: it wrote the incoming value over
--     the first officer's "keep the LA value", recorded as kept_la).
CREATE OR REPLACE FUNCTION results._officer_lock(p_base text, p_student text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('b2b.officer.' || p_base), hashtext(p_student));
END $$;

-- The student's current link, as an officer reads it: 'LA child P2 (confirm by jane at …)'.
CREATE OR REPLACE FUNCTION results._officer_linked(p_base text, p_student text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE pid text;
        by_ text;
        what text;
BEGIN
    SELECT l.person_id, l.linked_by INTO pid, by_ FROM core.child_link l
     WHERE l.base_id = p_base AND l.student_guid = p_student;
    IF pid IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT format('%s by %s at %s', d.decision, d.decided_by, to_char(d.decided_at, 'YYYY-MM-DD HH24:MI:SS'))
      INTO what FROM results.match_decision d
     WHERE d.base_id = p_base AND d.student_guid = p_student AND d.person_id = pid AND by_ = 'officer'
       AND d.decision <> 'reject'
     ORDER BY d.decided_at DESC, d.decision_id DESC LIMIT 1;
    RETURN format('LA child %s (%s)', pid, coalesce(what, CASE by_ WHEN 'officer' THEN 'by an officer'
                                                                  ELSE 'linked by ' || by_ END));
END $$;

CREATE OR REPLACE FUNCTION results.officer_link(p_base text, p_student text, p_person text,
                                                p_decision text DEFAULT 'link', p_note text DEFAULT NULL,
                                                p_web_user text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE who text := results.officer_identity(p_web_user);
        fid bigint;
        cur record;
        linked_to text;
        linked_by_ text;
BEGIN
    IF p_decision NOT IN ('link', 'confirm', 'new_child') THEN
        RAISE EXCEPTION 'decision must be link or confirm' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM results._officer_lock(p_base, p_student);
    fid := results._officer_file(p_base, p_student);
    IF NOT EXISTS (SELECT 1 FROM core.child WHERE person_id = p_person) THEN
        RAISE EXCEPTION 'no LA child %', p_person USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM core.child WHERE person_id = p_person AND active) THEN
        RAISE EXCEPTION 'LA child % is inactive (no longer in the LA''s records)', p_person
              USING ERRCODE = 'no_data_found';
    END IF;
    SELECT l.person_id, l.linked_by INTO linked_to, linked_by_ FROM core.child_link l
     WHERE l.base_id = p_base AND l.student_guid = p_student;
    IF linked_by_ = 'officer' AND p_decision <> 'new_child' THEN
        IF linked_to = p_person THEN
            RAISE EXCEPTION 'base %: student % is already linked to %; nothing to do', p_base, p_student,
                  results._officer_linked(p_base, p_student);
        END IF;
        RAISE EXCEPTION 'base %: student % is already linked to %; reject that link first to link it to %',
              p_base, p_student, results._officer_linked(p_base, p_student), p_person;
    END IF;
    IF p_decision = 'confirm' THEN
        SELECT m.status, m.person_id INTO cur FROM results.match m WHERE m.file_id = fid AND m.student_guid = p_student;
        IF cur.status IS DISTINCT FROM 'possible' THEN
            RAISE EXCEPTION 'base %: student % is no longer a possible match (it is now %); look at it again, '
                            'or link it to LA child % by hand', p_base, p_student,
                  CASE WHEN cur.person_id IS NOT NULL THEN cur.status || ' to LA child ' || cur.person_id
                       ELSE coalesce(cur.status, 'not matched') END, p_person;
        END IF;
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

CREATE OR REPLACE FUNCTION results.officer_reject(p_base text, p_student text, p_person text,
                                                  p_note text DEFAULT NULL, p_web_user text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE who text := results.officer_identity(p_web_user);
        fid bigint;
BEGIN
    PERFORM results._officer_lock(p_base, p_student);
    fid := results._officer_file(p_base, p_student);
    INSERT INTO results.match_decision (base_id, student_guid, person_id, decision, decided_by, note)
    VALUES (p_base, p_student, p_person, 'reject', who, p_note);
    DELETE FROM core.child_link WHERE base_id = p_base AND student_guid = p_student AND person_id = p_person;
    UPDATE results.match SET person_id = NULL, status = 'unmatched', rule = 'none',
           explanation = explanation || jsonb_build_object('rejected_by', who)
     WHERE file_id = fid AND student_guid = p_student AND person_id = p_person;
    RETURN who;
END $$;

CREATE OR REPLACE FUNCTION results.officer_new_child(p_base text, p_student text, p_web_user text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE who text := results.officer_identity(p_web_user);
        fid bigint;
        pid text;
        linked text;
        n int;
BEGIN
    PERFORM results._officer_lock(p_base, p_student);
    fid := results._officer_file(p_base, p_student);
    linked := results._officer_linked(p_base, p_student);
    IF linked IS NOT NULL THEN
        RAISE EXCEPTION 'base %: student % is already linked to %; no new LA child made (reject that link first)',
              p_base, p_student, linked;
    END IF;
    pid := core.next_person_id();
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

CREATE OR REPLACE FUNCTION results.officer_resolve(p_person text, p_field text, p_keep text,
                                                   p_web_user text DEFAULT NULL) RETURNS int
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
    PERFORM pg_advisory_xact_lock(hashtext('b2b.resolve.' || p_person), hashtext(p_field));
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
