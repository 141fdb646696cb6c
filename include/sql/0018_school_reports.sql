-- 0018 weekly per-school anomaly reports and their return (F32, F33, F42), the officers'
-- "send to school" referrals, and the LA's address gazetteer used by the postcode check.

-- The review screens find the (few) unmatched and possible decisions by status, not by a full
-- sort of every student's latest decision (b2b/ops/review.py).
CREATE INDEX match_open_status_idx ON results.match (status, base_id) WHERE status IN ('unmatched', 'possible');

-- The LA's address gazetteer (one row per UPRN). Helper migrations may create the same table.
CREATE TABLE IF NOT EXISTS core.address_gazetteer (uprn text PRIMARY KEY, paon text, saon text, street text, locality text, town text, postcode text, m_pc text);
CREATE INDEX IF NOT EXISTS address_gazetteer_m_pc_idx ON core.address_gazetteer (m_pc);
-- the report's postcode check looks an address up by street and house
CREATE INDEX IF NOT EXISTS address_gazetteer_street_paon_idx
    ON core.address_gazetteer (lower(btrim(street)), lower(btrim(paon)));

-- A school's report for one ISO week: the Word document to read, the spreadsheet to tick and
-- send back. ``secret`` signs the spreadsheet's rows (never shown to anyone). Kept 30 days.
CREATE TABLE results.school_report (
    report_id    bigserial PRIMARY KEY,
    base_id      text        NOT NULL,
    iso_year     int         NOT NULL,
    week         int         NOT NULL,
    name         text        NOT NULL,              -- B2BreportWeekNN
    docx         bytea       NOT NULL,
    xlsx         bytea       NOT NULL,
    secret       bytea       NOT NULL,
    students     int         NOT NULL,
    items        int         NOT NULL,
    postcode_checks int      NOT NULL,
    status       text        NOT NULL DEFAULT 'issued' CHECK (status IN ('issued', 'returned', 'received')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    notified_at  timestamptz,
    UNIQUE (base_id, iso_year, week)
);

-- Each difference printed in a report: the row the school ticks.
CREATE TABLE results.school_report_item (
    report_id    bigint NOT NULL REFERENCES results.school_report (report_id) ON DELETE CASCADE,
    row_key      int    NOT NULL,
    student_guid text   NOT NULL,
    person_id    text   NOT NULL,
    field        text   NOT NULL,
    school_value text,
    la_value     text,
    PRIMARY KEY (report_id, row_key)
);

-- What a school sent back: "sent, not yet received" until the LA receives it; the school
-- may recall it until then. One live (sent or received) upload per report.
CREATE TABLE results.school_upload (
    upload_id    bigserial PRIMARY KEY,
    report_id    bigint      NOT NULL REFERENCES results.school_report (report_id) ON DELETE CASCADE,
    base_id      text        NOT NULL,
    filename     text        NOT NULL,
    file         bytea       NOT NULL,
    choices      jsonb       NOT NULL,             -- {"row_key": "school" | "la"}
    status       text        NOT NULL DEFAULT 'sent' CHECK (status IN ('sent', 'recalled', 'received')),
    uploaded_by  text        NOT NULL,
    uploaded_at  timestamptz NOT NULL DEFAULT now(),
    recalled_at  timestamptz,
    received_at  timestamptz,
    received_by  text
);
CREATE UNIQUE INDEX school_upload_live_key ON results.school_upload (report_id) WHERE status IN ('sent', 'received');
CREATE INDEX school_upload_base_idx ON results.school_upload (base_id, uploaded_at DESC);

-- Each tick, once the LA has received the upload: "school" = the LA was wrong (the LA record
-- is amended: applied), "la" = the school was wrong (open until the school's next export
-- agrees: closed). Kept after the report itself is purged (the audit trail of decisions).
CREATE TABLE results.school_report_decision (
    report_id    bigint      NOT NULL,
    row_key      int         NOT NULL,
    upload_id    bigint      NOT NULL,
    base_id      text        NOT NULL,
    student_guid text        NOT NULL,
    person_id    text        NOT NULL,
    field        text        NOT NULL,
    school_value text,
    la_value     text,
    correct      text        NOT NULL CHECK (correct IN ('school', 'la')),
    status       text        NOT NULL CHECK (status IN ('applied', 'open', 'closed', 'not_applied')),
    note         text,
    decided_by   text        NOT NULL,
    decided_at   timestamptz NOT NULL DEFAULT now(),
    closed_at    timestamptz,
    PRIMARY KEY (report_id, row_key)
);
CREATE INDEX school_report_decision_open_idx ON results.school_report_decision (base_id) WHERE status = 'open';

-- The school's page: where its notices go, and its access key (stored hashed).
CREATE TABLE ops.school_portal (
    base_id          text PRIMARY KEY,
    email            text,
    token_hash       text UNIQUE,
    token_created_at timestamptz
);

-- An officer sent a conflict to the school (asks the school which value is right on its
-- next report) instead of deciding it: recorded, shown on the Conflicts screen.
CREATE TABLE results.conflict_referral (
    person_id      text        NOT NULL,
    field          text        NOT NULL,
    la_value       text,
    incoming_value text,
    referred_by    text        NOT NULL,
    referred_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX conflict_referral_key ON results.conflict_referral
    (person_id, field, coalesce(la_value, ''), coalesce(incoming_value, ''));
