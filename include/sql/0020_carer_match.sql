-- F14 (issue 14 part 5): school contacts (carers) matched to the LA's person records with the
-- student matcher: LA adults, and LA children at least CARER_MIN years old on the window's date.

-- Adults the LA holds (parents, carers known to children's services); children are core.child.
CREATE TABLE core.adult (
    person_id     text PRIMARY KEY,
    forename      text,
    middle_names  text,
    surname       text,
    gender        text,
    dob           date,
    paon          text,
    street        text,
    postcode      text
);

-- One row per school contact per file: the LA person it was matched to (or proposed, or none).
CREATE TABLE results.carer_match (
    file_id       bigint NOT NULL REFERENCES raw.inbound_file (file_id) ON DELETE CASCADE,
    base_id       text   NOT NULL,
    contact_id    text   NOT NULL,          -- the school's contact person id
    student_guid  text   NOT NULL,          -- a student the contact is related to (the lowest GUID)
    person_id     text,                     -- core.adult or core.child person id; null when unmatched
    person_kind   text   CHECK (person_kind IN ('adult', 'child')),
    status        text   NOT NULL CHECK (status IN ('matched', 'matched_with_conflicts', 'possible', 'unmatched')),
    rule          text   NOT NULL,
    score         numeric,
    explanation   jsonb  NOT NULL DEFAULT '{}'::jsonb,
    matched_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, contact_id)
);
CREATE INDEX carer_match_person_idx ON results.carer_match (person_id);
