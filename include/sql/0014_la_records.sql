-- 0014 (issue 10, part 1 and 5): the LA's own records in, with history; its gazetteer;
-- officer-created children numbered from a sequence.

-- Where a child record came from: 'la' (the LA's extract, `b2b core load`) or 'officer'
-- (an officer's "new child"). A full LA extract marks an 'la' record it no longer holds
-- inactive (never deleted: matches, conflicts and decisions keep pointing at it); the
-- matcher ignores inactive children.
ALTER TABLE core.child
    ADD COLUMN origin         text        NOT NULL DEFAULT 'la' CHECK (origin IN ('la', 'officer')),
    ADD COLUMN active         boolean     NOT NULL DEFAULT true,
    ADD COLUMN inactive_since timestamptz,
    ADD COLUMN version        int         NOT NULL DEFAULT 1;
UPDATE core.child SET origin = 'officer' WHERE updated_by LIKE 'officer:%';
CREATE INDEX child_active_idx ON core.child (person_id) WHERE NOT active;

-- One row per load of an LA extract (the audit trail: file, who, counts).
CREATE TABLE core.load_run (
    load_id      bigserial PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('children', 'gazetteer')),
    source       text        NOT NULL,             -- file name (no path), or 'records'
    sha256       text,
    full_extract boolean     NOT NULL,
    loaded_by    text        NOT NULL DEFAULT session_user,
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    counts       jsonb       NOT NULL DEFAULT '{}'::jsonb
);

-- Every version of every LA record as the LA sent it: a changed record gets a new version,
-- the old one is closed (valid_to). The current version has valid_to NULL.
CREATE TABLE core.child_version (
    person_id   text        NOT NULL REFERENCES core.child (person_id),
    version     int         NOT NULL,
    record      jsonb       NOT NULL,              -- the loaded columns
    active      boolean     NOT NULL,
    valid_from  timestamptz NOT NULL DEFAULT now(),
    valid_to    timestamptz,
    load_id     bigint REFERENCES core.load_run (load_id),
    PRIMARY KEY (person_id, version)
);
CREATE UNIQUE INDEX child_version_current_idx ON core.child_version (person_id) WHERE valid_to IS NULL;

INSERT INTO core.child_version (person_id, version, record, active, valid_from)
SELECT person_id, 1,
       jsonb_strip_nulls(jsonb_build_object('upn', upn, 'forename', forename, 'middle_names', middle_names,
           'surname', surname, 'gender', gender, 'dob', dob, 'ethnicity', ethnicity,
           'first_language', first_language, 'sen_status', sen_status, 'base_id', base_id, 'paon', paon,
           'street', street, 'town', town, 'postcode', postcode)),
       true, updated_at
  FROM core.child;

-- The LA's address gazetteer (LLPG extract): for the postcode check in the anomaly report.
-- (The same definition is created IF NOT EXISTS by the school report's migration.)
CREATE TABLE IF NOT EXISTS core.address_gazetteer (
    uprn text PRIMARY KEY, paon text, saon text, street text, locality text, town text, postcode text, m_pc text);
CREATE INDEX IF NOT EXISTS address_gazetteer_m_pc_idx ON core.address_gazetteer (m_pc);

-- Officer-created children: B2B0000001, B2B0000002, ... from a sequence (a row count
-- collided after a delete and under concurrency). Starts after any id already used.
CREATE SEQUENCE core.person_id_seq;
SELECT setval('core.person_id_seq',
              greatest(1, coalesce((SELECT max(substr(person_id, 4)::bigint) FROM core.child
                                     WHERE person_id ~ '^B2B[0-9]+$'), 0)),
              (SELECT count(*) > 0 FROM core.child WHERE person_id ~ '^B2B[0-9]+$'));
CREATE FUNCTION core.next_person_id() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT 'B2B' || lpad(nextval('core.person_id_seq')::text, 7, '0')
$$;
