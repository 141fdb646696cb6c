-- 0008 (issue 4; F27, F29, F6): every F27 field reaches the LA's current view for matched
-- students; SEN needs and exclusions are kept per child as whole groups, a new version only
-- when the group differs from the one the LA holds (SIMS Primary re-sends the whole group).
ALTER TABLE core.child
    ADD COLUMN eal boolean, ADD COLUMN gifted_talented boolean, ADD COLUMN service_child boolean,
    ADD COLUMN traveller boolean, ADD COLUMN connexions_assent boolean;
ALTER TABLE core.child_applied
    ADD COLUMN eal boolean, ADD COLUMN gifted_talented boolean, ADD COLUMN service_child boolean,
    ADD COLUMN traveller boolean, ADD COLUMN connexions_assent boolean;

CREATE TABLE core.child_sen (
    file_id       bigint NOT NULL REFERENCES raw.inbound_file (file_id) ON DELETE CASCADE,
    person_id     text   NOT NULL REFERENCES core.child (person_id),
    base_id       text   NOT NULL,
    student_guid  text   NOT NULL,
    window_order  text   NOT NULL,
    start_date    date,
    needs         jsonb  NOT NULL,          -- [{type, ranking}], ordered by ranking
    PRIMARY KEY (file_id, person_id)
);
CREATE INDEX child_sen_key_idx ON core.child_sen (person_id, window_order DESC);

CREATE TABLE core.child_exclusion (
    file_id       bigint NOT NULL REFERENCES raw.inbound_file (file_id) ON DELETE CASCADE,
    person_id     text   NOT NULL REFERENCES core.child (person_id),
    base_id       text   NOT NULL,
    student_guid  text   NOT NULL,
    window_order  text   NOT NULL,
    exclusions    jsonb  NOT NULL,          -- [{category, start_date, end_date, reason, term, academic_year, sessions}]
    PRIMARY KEY (file_id, person_id)
);
CREATE INDEX child_exclusion_key_idx ON core.child_exclusion (person_id, window_order DESC);

-- One row per current SEN need of a child (the latest group the schools sent).
CREATE VIEW core.child_sen_need_current AS
SELECT s.person_id, s.base_id, s.start_date, n->>'type' AS need_type, (n->>'ranking')::int AS ranking
  FROM (SELECT DISTINCT ON (person_id) * FROM core.child_sen ORDER BY person_id, window_order DESC) s
 CROSS JOIN LATERAL jsonb_array_elements(s.needs) AS n;

-- One row per exclusion of a child (F29): category (PERM, FIXD, LNCH), dates, reason, term, year.
CREATE VIEW core.child_exclusion_current AS
SELECT e.person_id, e.base_id, x->>'category' AS category, (x->>'start_date')::date AS start_date,
       (x->>'end_date')::date AS end_date, x->>'reason' AS reason, x->>'term' AS term,
       (x->>'academic_year')::int AS academic_year, (x->>'sessions')::int AS sessions
  FROM (SELECT DISTINCT ON (person_id) * FROM core.child_exclusion ORDER BY person_id, window_order DESC) e
 CROSS JOIN LATERAL jsonb_array_elements(e.exclusions) AS x;

-- The F27 flags join the analysts' view of the child (appended columns).
CREATE OR REPLACE VIEW core.child_current AS
SELECT c.person_id,
       coalesce(c.upn, a.upn)                   AS upn,
       coalesce(c.forename, a.forename)         AS forename,
       coalesce(c.middle_names, a.middle_names) AS middle_names,
       coalesce(c.surname, a.surname)           AS surname,
       coalesce(c.gender, a.gender)             AS gender,
       coalesce(c.dob, a.dob)                   AS dob,
       coalesce(c.ethnicity, a.ethnicity)       AS ethnicity,
       coalesce(c.first_language, a.first_language) AS first_language,
       coalesce(a.preferred_forename, c.preferred_forename) AS preferred_forename,
       coalesce(a.preferred_surname, c.preferred_surname)   AS preferred_surname,
       coalesce(a.home_language, c.home_language) AS home_language,
       coalesce(a.religion, c.religion)         AS religion,
       coalesce(a.sen_status, c.sen_status)     AS sen_status,
       coalesce(a.ncy, c.ncy)                   AS ncy,
       coalesce(a.base_id, c.base_id)           AS base_id,
       coalesce(a.enrol_status, c.enrol_status) AS enrol_status,
       coalesce(a.reg_group, c.reg_group)       AS reg_group,
       coalesce(a.start_date, c.start_date)     AS start_date,
       coalesce(a.end_date, c.end_date)         AS end_date,
       coalesce(a.looked_after, c.looked_after) AS looked_after,
       CASE WHEN c.postcode IS NULL THEN d.paon ELSE c.paon END         AS paon,
       CASE WHEN c.postcode IS NULL THEN d.street ELSE c.street END     AS street,
       CASE WHEN c.postcode IS NULL THEN d.town ELSE c.town END         AS town,
       coalesce(c.postcode, d.postcode)         AS postcode,
       c.updated_at,
       coalesce(a.eal, c.eal) AS eal, coalesce(a.gifted_talented, c.gifted_talented) AS gifted_talented,
       coalesce(a.service_child, c.service_child) AS service_child, coalesce(a.traveller, c.traveller) AS traveller,
       coalesce(a.connexions_assent, c.connexions_assent) AS connexions_assent
  FROM core.child c
  LEFT JOIN LATERAL (
        SELECT x.* FROM core.child_applied x
         WHERE x.person_id = c.person_id ORDER BY x.window_order DESC LIMIT 1) a ON true
  LEFT JOIN LATERAL (
        SELECT y.* FROM core.child_applied_address y
         WHERE y.person_id = c.person_id ORDER BY y.window_order DESC LIMIT 1) d ON true;
