-- 0022 (issues 10 and 12, F41/F42): the review screens' login b2b_ui (an officer that may act
-- for the logged-in web user) needs, besides the officer functions, the screens' own records:
-- officers' referrals to schools, the schools' portal keys, their uploads and the decisions
-- taken on receipt. Read and write those only; never delete, never a payload elsewhere.
GRANT USAGE ON SCHEMA results, ops TO b2b_ui;
GRANT SELECT, INSERT, UPDATE ON results.conflict_referral, results.school_upload, results.school_report_decision
   TO b2b_ui;
GRANT SELECT, UPDATE ON results.school_report, results.school_report_item TO b2b_ui;
GRANT SELECT ON ops.school_portal TO b2b_ui;
DO $$
DECLARE s text;
BEGIN
    FOR s IN SELECT pg_get_serial_sequence(t, c)
               FROM (VALUES ('results.conflict_referral'), ('results.school_upload'),
                            ('results.school_report_decision')) AS x(t)
               CROSS JOIN LATERAL (SELECT a.attname::text AS c FROM pg_attribute a
                                    WHERE a.attrelid = x.t::regclass AND a.attnum > 0 AND NOT a.attisdropped) cols
              WHERE pg_get_serial_sequence(t, c) IS NOT NULL
    LOOP
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO b2b_ui', s);
    END LOOP;
END $$;
