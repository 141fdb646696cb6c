-- 0011 contacts (F34–F38, seed 004) and return to school (F25, F28).
-- Contacts: the contacts of each base's current students, as accounts. A contact is keyed
-- by the school's person id within its base (a SIMS person id is local to one school's
-- database); its username is its chosen email address, unique within the base.

-- Lookups the mapping matches against (seed 004: "Tools -> Set Up Lookups"): a title or
-- gender is mapped only when a known value matches (case-insensitive).
CREATE TABLE core.contact_lookup (
    kind    text NOT NULL CHECK (kind IN ('title', 'gender')),
    code    text NOT NULL,              -- what SIMS may send, lower case
    value   text NOT NULL,              -- what the account gets
    PRIMARY KEY (kind, code)
);
INSERT INTO core.contact_lookup (kind, code, value) VALUES
    ('title', 'mr', 'Mr'), ('title', 'mrs', 'Mrs'), ('title', 'miss', 'Miss'), ('title', 'ms', 'Ms'),
    ('title', 'mx', 'Mx'), ('title', 'dr', 'Dr'), ('title', 'prof', 'Prof'), ('title', 'rev', 'Rev'),
    ('title', 'sir', 'Sir'), ('title', 'dame', 'Dame'), ('title', 'lord', 'Lord'), ('title', 'lady', 'Lady'),
    ('gender', 'm', 'Male'), ('gender', 'male', 'Male'), ('gender', 'f', 'Female'), ('gender', 'female', 'Female');

CREATE TABLE core.contact (
    base_id              text NOT NULL,
    person_id            text NOT NULL,             -- SIMS person id: the account's third-party id
    title                text,                      -- null unless a known title matched
    forename             text NOT NULL,
    surname              text NOT NULL,
    gender               text,                      -- Male / Female, null unless a known value matched
    address_paon         text,                      -- the home address with the latest start date (F34)
    address_street       text,
    address_town         text,
    postcode             text,
    address_start_date   date,
    home_telephone       text,                      -- per type: Primary, then Main, then the first (F35)
    mobile_telephone     text,
    work_telephone       text,
    personal_email       text,
    work_email           text,
    username             text NOT NULL,             -- the Primary, else Main, else first email
    email_preference     text NOT NULL CHECK (email_preference IN ('Personal', 'Work')),
    telephone_preference text NOT NULL CHECK (telephone_preference IN ('Home', 'Mobile', 'Work', 'None')),
    is_staff             boolean NOT NULL DEFAULT false,
    roles                text[] NOT NULL,           -- {contact}, {staff,contact}, {staff} or {}
    active               boolean NOT NULL,          -- false: disabled (no current student), never deleted
    created_window       text NOT NULL,             -- window_order of the run that created the account
    updated_window       text NOT NULL,
    disabled_window      text,
    PRIMARY KEY (base_id, person_id)
);
CREATE UNIQUE INDEX contact_username_key ON core.contact (base_id, lower(username));

-- Contact links: which current student a contact is related to, and how (F34).
CREATE TABLE core.contact_link (
    base_id                 text NOT NULL,
    person_id               text NOT NULL,
    student_guid            text NOT NULL,
    relationship            text,
    parental_responsibility boolean,
    priority                int,
    PRIMARY KEY (base_id, person_id, student_guid),
    FOREIGN KEY (base_id, person_id) REFERENCES core.contact (base_id, person_id)
);

-- Contacts that could not be imported, one row per reason (F36, F37): no forename, no
-- surname, no email address, or an email already used as another contact's username.
-- Rebuilt for the base by each contacts run: a record fixed in SIMS leaves the list.
CREATE TABLE results.rejected_contact (
    base_id       text NOT NULL,
    person_id     text NOT NULL,
    reason        text NOT NULL CHECK (reason IN ('no_forename', 'no_surname', 'no_email', 'username_in_use')),
    detail        text NOT NULL,
    student_guids text[] NOT NULL,                  -- the current students it is related to
    forename      text,
    surname       text,
    email         text,
    window_order  text NOT NULL,                    -- the run that last found it
    PRIMARY KEY (base_id, person_id, reason)
);

-- A jsonb value as a list: a missing or malformed list is empty.
CREATE FUNCTION core.jsonb_list(j jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(j) = 'array' THEN j ELSE '[]'::jsonb END
$$;

-- Return to school (F25, F28): what each import-to-school run sent, and the message itself.
CREATE TABLE raw.outbound_file (
    outbound_id  bigserial PRIMARY KEY,
    base_id      text        NOT NULL,
    task_key     text        NOT NULL,
    dag_id       text        NOT NULL,
    run_id       text        NOT NULL,
    window_end   timestamptz NOT NULL,
    pupils       int         NOT NULL,
    payload      bytea       NOT NULL,          -- the B2BReturn XML (include/schemas/b2b_return.xsd)
    size_bytes   int         NOT NULL,
    sha256       text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('built', 'delivered', 'failed')),
    response     jsonb,                         -- the school's answer: applied, refused (with reasons)
    error        text,
    sent_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dag_id, window_end)
);

-- One row per (student, field) returned: the LA's corrected value and the school's value it
-- replaces. Only fields an officer settled by keeping the LA's value (resolution kept_la)
-- are returned, and only while the school's latest data still holds the other value.
CREATE TABLE results.returned_field (
    outbound_id  bigint NOT NULL REFERENCES raw.outbound_file (outbound_id) ON DELETE CASCADE,
    base_id      text   NOT NULL,
    student_guid text   NOT NULL,
    person_id    text   NOT NULL,
    field        text   NOT NULL,
    la_value     text,
    school_value text,
    status       text   NOT NULL DEFAULT 'sent' CHECK (status IN ('sent', 'applied', 'refused')),
    detail       text,
    PRIMARY KEY (outbound_id, student_guid, field)
);
