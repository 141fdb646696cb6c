-- 0002 processing chain: hash cache, staging tables, LA core, results (matches,
-- conflicts, anomalies).
--
-- Design rule: every row derived from an inbound file references it with
-- ON DELETE CASCADE. A rerun of a (DAG, window) deletes that window's files first, so
-- everything the earlier attempt derived disappears with them and the rerun rebuilds it
-- from the same state: tables end up as if the window had run once.

-- Block disposition through the chain (set by hash filter, validation and load).
ALTER TABLE raw.inbound_block
    ADD COLUMN hash        text,
    ADD COLUMN disposition text CHECK (disposition IN ('pending', 'skipped', 'invalid', 'loaded'));

-- Hash cache (F7/F15/F20, setting B2BHCACHE): one row per LOADED block. The cached hash
-- of (base, student, block type) for a run is the newest entry from an earlier window.
CREATE TABLE ops.hash_cache (
    file_id       bigint NOT NULL,
    ordinal       int    NOT NULL,
    base_id       text   NOT NULL,
    student_guid  text   NOT NULL,
    block_type    text   NOT NULL,
    hash          text   NOT NULL,
    window_order  text   NOT NULL,
    loaded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, ordinal),
    FOREIGN KEY (file_id, ordinal) REFERENCES raw.inbound_block (file_id, ordinal) ON DELETE CASCADE
);
CREATE INDEX hash_cache_key_idx ON ops.hash_cache (base_id, student_guid, block_type, window_order DESC);

-- LA settings (System Defaults): B2BHCACHE, GUIDMATCH, B2B_S_AGE, CARER_MIN.
CREATE TABLE ops.la_setting (
    name       text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- staging
-- Typed rows per block type. (file_id, ordinal) is the block; list blocks have an item no.
CREATE TABLE staging.student (
    file_id bigint NOT NULL, ordinal int NOT NULL, base_id text NOT NULL, student_guid text NOT NULL,
    upn text, surname text, forename text, middle_names text, preferred_surname text,
    preferred_forename text, dob date, gender text, ethnicity text, first_language text,
    home_language text, religion text, ncy text, reg_group text, enrol_status text,
    start_date date, end_date date, eal boolean, gifted_talented boolean, service_child boolean,
    traveller boolean, connexions_assent boolean, looked_after boolean, sen_status text,
    PRIMARY KEY (file_id, ordinal),
    FOREIGN KEY (file_id, ordinal) REFERENCES raw.inbound_block (file_id, ordinal) ON DELETE CASCADE
);
CREATE INDEX staging_student_key_idx ON staging.student (base_id, student_guid);

CREATE TABLE staging.address (
    file_id bigint NOT NULL, ordinal int NOT NULL, base_id text NOT NULL, student_guid text NOT NULL,
    paon text, saon text, street text, locality text, town text, county text, postcode text, start_date date,
    PRIMARY KEY (file_id, ordinal),
    FOREIGN KEY (file_id, ordinal) REFERENCES raw.inbound_block (file_id, ordinal) ON DELETE CASCADE
);
CREATE INDEX staging_address_key_idx ON staging.address (base_id, student_guid);

CREATE TABLE staging.contact (
    file_id bigint NOT NULL, ordinal int NOT NULL, item int NOT NULL, base_id text NOT NULL,
    student_guid text NOT NULL, person_id text, title text, forename text, surname text, gender text,
    relationship text, parental_responsibility boolean, priority int, is_staff boolean,
    addresses jsonb, telephones jsonb, emails jsonb,
    PRIMARY KEY (file_id, ordinal, item),
    FOREIGN KEY (file_id, ordinal) REFERENCES raw.inbound_block (file_id, ordinal) ON DELETE CASCADE
);

CREATE TABLE staging.sen_need (
    file_id bigint NOT NULL, ordinal int NOT NULL, item int NOT NULL, base_id text NOT NULL,
    student_guid text NOT NULL, start_date date, type text, ranking int,
    PRIMARY KEY (file_id, ordinal, item),
    FOREIGN KEY (file_id, ordinal) REFERENCES raw.inbound_block (file_id, ordinal) ON DELETE CASCADE
);

CREATE TABLE staging.exclusion (
    file_id bigint NOT NULL, ordinal int NOT NULL, item int NOT NULL, base_id text NOT NULL,
    student_guid text NOT NULL, category text, start_date date, end_date date, reason text,
    term text, academic_year int, sessions int,
    PRIMARY KEY (file_id, ordinal, item),
    FOREIGN KEY (file_id, ordinal) REFERENCES raw.inbound_block (file_id, ordinal) ON DELETE CASCADE
);

CREATE TABLE staging.attendance (
    file_id bigint NOT NULL, ordinal int NOT NULL, base_id text NOT NULL, student_guid text NOT NULL,
    academic_year int, start_date date, marks text, changes jsonb,
    PRIMARY KEY (file_id, ordinal),
    FOREIGN KEY (file_id, ordinal) REFERENCES raw.inbound_block (file_id, ordinal) ON DELETE CASCADE
);

CREATE TABLE staging.attainment (
    file_id bigint NOT NULL, ordinal int NOT NULL, item int NOT NULL, base_id text NOT NULL,
    student_guid text NOT NULL, hierarchy text, aspect text, result text, result_date date,
    PRIMARY KEY (file_id, ordinal, item),
    FOREIGN KEY (file_id, ordinal) REFERENCES raw.inbound_block (file_id, ordinal) ON DELETE CASCADE
);

-- ---------------------------------------------------------------- LA core ("One")
CREATE TABLE core.child (
    person_id          text PRIMARY KEY,
    upn                text,
    forename           text,
    middle_names       text,
    surname            text,
    preferred_forename text,
    preferred_surname  text,
    gender             text,
    dob                date,
    ethnicity          text,
    first_language     text,
    home_language      text,
    religion           text,
    sen_status         text,
    ncy                text,
    base_id            text,              -- the school the LA believes the child attends
    enrol_status       text,
    reg_group          text,
    start_date         date,
    end_date           date,
    looked_after       boolean,
    paon               text,
    saon               text,
    street             text,
    locality           text,
    town               text,
    county             text,
    postcode           text,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    updated_by         text NOT NULL DEFAULT 'load'
);
CREATE INDEX child_upn_idx ON core.child (upn);
CREATE INDEX child_dob_idx ON core.child (dob, lower(surname));

-- GUID links (F16): an MIS GUID already linked to an LA child.
CREATE TABLE core.child_link (
    base_id       text NOT NULL,
    student_guid  text NOT NULL,
    person_id     text NOT NULL REFERENCES core.child (person_id),
    linked_at     timestamptz NOT NULL DEFAULT now(),
    linked_by     text NOT NULL,          -- 'la' (pre-existing), 'match', 'officer'
    -- links made by an automatic match go away with the file that made them (reruns)
    file_id       bigint REFERENCES raw.inbound_file (file_id) ON DELETE CASCADE,
    PRIMARY KEY (base_id, student_guid)
);
CREATE INDEX child_link_person_idx ON core.child_link (person_id);

-- ---------------------------------------------------------------- results
-- Row-level validation failures: the block is not loaded, the rest of the file is.
CREATE TABLE results.anomaly (
    anomaly_id    bigserial PRIMARY KEY,
    file_id       bigint NOT NULL,
    ordinal       int    NOT NULL,
    base_id       text   NOT NULL,
    student_guid  text   NOT NULL,
    block_type    text   NOT NULL,
    rule          text   NOT NULL,
    field         text,
    value         text,                    -- the offending value (personal data: not logged)
    detected_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (file_id, ordinal) REFERENCES raw.inbound_block (file_id, ordinal) ON DELETE CASCADE
);
CREATE INDEX anomaly_base_idx ON results.anomaly (base_id, block_type, rule);

-- One row per student per file whose student block was matched in that run.
CREATE TABLE results.match (
    file_id       bigint NOT NULL REFERENCES raw.inbound_file (file_id) ON DELETE CASCADE,
    base_id       text   NOT NULL,
    student_guid  text   NOT NULL,
    person_id     text,                    -- null when unmatched
    status        text   NOT NULL CHECK (status IN ('matched', 'matched_with_conflicts', 'possible', 'unmatched')),
    rule          text   NOT NULL,         -- the rule that fired: guid, upn_3_of_4, all_4, none
    score         numeric,
    hidden        boolean NOT NULL DEFAULT false,   -- F13: unmatched older than B2B_S_AGE
    age_years     int,
    window_order  text   NOT NULL,
    explanation   jsonb  NOT NULL DEFAULT '{}'::jsonb,
    matched_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, student_guid)
);
CREATE INDEX match_key_idx ON results.match (base_id, student_guid, window_order DESC);

-- The latest match decision per school student.
CREATE VIEW results.current_match AS
SELECT DISTINCT ON (base_id, student_guid) *
  FROM results.match
 ORDER BY base_id, student_guid, window_order DESC;

-- Each observation of a field whose incoming value differs from the LA's value.
CREATE TABLE results.conflict_observation (
    file_id        bigint NOT NULL REFERENCES raw.inbound_file (file_id) ON DELETE CASCADE,
    base_id        text NOT NULL,
    student_guid   text NOT NULL,
    person_id      text NOT NULL,
    field          text NOT NULL,
    la_value       text,
    incoming_value text,
    window_end     timestamptz NOT NULL,
    PRIMARY KEY (file_id, student_guid, field)
);
CREATE INDEX conflict_obs_key_idx ON results.conflict_observation (person_id, field);

-- Officer decisions and Clear Conflicts (F18) on a conflict (person, field, values).
CREATE TABLE results.conflict_resolution (
    person_id      text NOT NULL,
    field          text NOT NULL,
    la_value       text,
    incoming_value text,
    resolution     text NOT NULL CHECK (resolution IN ('cleared', 'kept_la', 'accepted_incoming')),
    resolved_at    timestamptz NOT NULL DEFAULT now(),
    resolved_by    text NOT NULL
);
CREATE UNIQUE INDEX conflict_resolution_key ON results.conflict_resolution
    (person_id, field, coalesce(la_value, ''), coalesce(incoming_value, ''));

-- F17/F20: the Matched-with-Conflicts list. Identical conflicts from repeated imports
-- are one row, with when they were first and last seen and how many windows saw them.
CREATE VIEW results.conflict AS
SELECT o.person_id, o.field, o.la_value, o.incoming_value,
       min(o.base_id)        AS base_id,
       min(o.student_guid)   AS student_guid,
       min(o.window_end)     AS first_seen,
       max(o.window_end)     AS last_seen,
       count(DISTINCT o.file_id) AS times_seen
  FROM results.conflict_observation o
 WHERE NOT EXISTS (
        SELECT 1 FROM results.conflict_resolution r
         WHERE r.person_id = o.person_id AND r.field = o.field
           AND r.la_value IS NOT DISTINCT FROM o.la_value
           AND r.incoming_value IS NOT DISTINCT FROM o.incoming_value)
 GROUP BY o.person_id, o.field, o.la_value, o.incoming_value;

-- Tolerant casts for loading staging from jsonb (validation has already flagged bad values).
CREATE FUNCTION staging.try_date(v text) RETURNS date LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN v::date;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

CREATE FUNCTION staging.try_int(v text) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN v::int;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

CREATE FUNCTION staging.try_bool(v text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN v::boolean;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

-- School data applied to matched children (F6). The chain never edits the LA's own
-- record (core.child: officer decisions only); each run that brings new data for a
-- matched child adds a row here, which goes away with its file on a rerun.
CREATE TABLE core.child_applied (
    file_id            bigint NOT NULL REFERENCES raw.inbound_file (file_id) ON DELETE CASCADE,
    person_id          text   NOT NULL REFERENCES core.child (person_id),
    base_id            text   NOT NULL,
    student_guid       text   NOT NULL,
    window_order       text   NOT NULL,
    upn text, forename text, middle_names text, surname text, gender text, dob date, ethnicity text,
    first_language text, preferred_forename text, preferred_surname text, home_language text,
    religion text, sen_status text, ncy text, enrol_status text, reg_group text, start_date date,
    end_date date, looked_after boolean,
    PRIMARY KEY (file_id, person_id)
);
CREATE INDEX child_applied_key_idx ON core.child_applied (person_id, window_order DESC);

CREATE TABLE core.child_applied_address (
    file_id            bigint NOT NULL REFERENCES raw.inbound_file (file_id) ON DELETE CASCADE,
    person_id          text   NOT NULL REFERENCES core.child (person_id),
    base_id            text   NOT NULL,
    student_guid       text   NOT NULL,
    window_order       text   NOT NULL,
    paon text, saon text, street text, locality text, town text, county text, postcode text,
    PRIMARY KEY (file_id, person_id)
);
CREATE INDEX child_applied_address_key_idx ON core.child_applied_address (person_id, window_order DESC);

-- What analysts query: the LA's record, with the school's values for school-owned
-- fields and the school's identity values only where the LA holds none. Conflicting
-- identity values stay the LA's until an officer resolves the conflict.
CREATE VIEW core.child_current AS
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
       c.updated_at
  FROM core.child c
  LEFT JOIN LATERAL (
        SELECT x.* FROM core.child_applied x
         WHERE x.person_id = c.person_id ORDER BY x.window_order DESC LIMIT 1) a ON true
  LEFT JOIN LATERAL (
        SELECT y.* FROM core.child_applied_address y
         WHERE y.person_id = c.person_id ORDER BY y.window_order DESC LIMIT 1) d ON true;
