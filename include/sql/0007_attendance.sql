-- 0007 attendance (issue 4; F8, F22, F24, F30): one marks string per student per academic
-- year (DX_XML_Attend model: a character per session, AM then PM, for every weekday from
-- 1 September; '-' = no mark). Versions per file, like every derived table: a rerun
-- replaces its own versions; the current string is the newest version.
CREATE TABLE core.attendance_marks (
    file_id        bigint NOT NULL REFERENCES raw.inbound_file (file_id) ON DELETE CASCADE,
    base_id        text   NOT NULL,
    student_guid   text   NOT NULL,
    academic_year  int    NOT NULL,
    window_order   text   NOT NULL,
    marks          text   NOT NULL,
    PRIMARY KEY (file_id, student_guid, academic_year)
);
CREATE INDEX attendance_marks_key_idx ON core.attendance_marks (base_id, student_guid, academic_year, window_order DESC);

CREATE VIEW core.attendance_current AS
SELECT DISTINCT ON (base_id, student_guid, academic_year)
       base_id, student_guid, academic_year, make_date(academic_year, 9, 1) AS start_date, marks, window_order
  FROM core.attendance_marks
 ORDER BY base_id, student_guid, academic_year, window_order DESC;

-- Offset of a date's AM session in the marks string of the year starting p_start.
CREATE FUNCTION core.session_offset(p_start date, p_day date) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT 2 * count(*)::int
      FROM generate_series(p_start, p_day - 1, interval '1 day') AS d
     WHERE extract(isodow FROM d) < 6
$$;

-- Count the characters of s that are in the class chars.
CREATE FUNCTION core.count_codes(s text, chars text) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(length(s) - length(translate(s, chars, '')), 0)
$$;

-- Per student, for a period: DfE attendance measures. Possible sessions = present
-- (incl. approved educational activity) + authorised + unauthorised absence; X Y Z #
-- and '-' are not counted. Persistent absence: absence >= 10% of possible sessions.
CREATE FUNCTION results.attendance_summary(p_from date, p_to date)
RETURNS TABLE (base_id text, student_guid text, academic_year int, sessions_possible int, present int,
               authorised_absence int, unauthorised_absence int, absence_rate numeric, persistent_absence boolean)
LANGUAGE sql STABLE AS $$
    WITH w AS (
        SELECT a.base_id, a.student_guid, a.academic_year,
               substr(a.marks, core.session_offset(a.start_date, greatest(p_from, a.start_date)) + 1,
                      core.session_offset(a.start_date, p_to + 1)
                        - core.session_offset(a.start_date, greatest(p_from, a.start_date))) AS s
          FROM core.attendance_current a
         WHERE a.start_date <= p_to AND make_date(a.academic_year + 1, 8, 31) >= p_from),
    c AS (
        SELECT base_id, student_guid, academic_year,
               core.count_codes(s, '/\LBDJPVWK') AS present,
               core.count_codes(s, 'CEIMRSTQH') AS authorised,
               core.count_codes(s, 'GNOU') AS unauthorised
          FROM w)
    SELECT base_id, student_guid, academic_year, present + authorised + unauthorised, present, authorised,
           unauthorised,
           round((authorised + unauthorised)::numeric / nullif(present + authorised + unauthorised, 0), 4),
           coalesce((authorised + unauthorised)::numeric / nullif(present + authorised + unauthorised, 0) >= 0.10,
                    false)
      FROM c
$$;

-- Per school, for a period: totals and the persistent-absence count and rate.
CREATE FUNCTION results.school_attendance_summary(p_from date, p_to date)
RETURNS TABLE (base_id text, students int, sessions_possible bigint, present bigint, authorised_absence bigint,
               unauthorised_absence bigint, absence_rate numeric, persistently_absent int,
               persistent_absence_rate numeric)
LANGUAGE sql STABLE AS $$
    SELECT base_id, count(*)::int, sum(sessions_possible), sum(present), sum(authorised_absence),
           sum(unauthorised_absence),
           round(sum(authorised_absence + unauthorised_absence)::numeric / nullif(sum(sessions_possible), 0), 4),
           count(*) FILTER (WHERE persistent_absence)::int,
           round(count(*) FILTER (WHERE persistent_absence)::numeric / nullif(count(*), 0), 4)
      FROM results.attendance_summary(p_from, p_to)
     GROUP BY base_id
$$;
