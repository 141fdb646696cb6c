-- The carers' name counts cached per state of core.child and core.adult (0042) are superseded
-- by the kept counts of 0046 (core.carer_name_probe): the function, its cache tables and the
-- state of core.adult (a counter every statement writing core.adult raised, one row that
-- concurrent writers queued on) go. core.adult's matching keys and their indexes (0042) stay:
-- the carers' candidates read adults by them.
DROP FUNCTION core.carer_name_counts(date, int, text[], text[]);
DROP TABLE core.carer_name_count;
DROP TABLE core.carer_name_totals;
DROP TRIGGER adult_change ON core.adult;
DROP FUNCTION core.note_adult_change();
DROP TABLE core.adult_version;

-- core.child's changes noted as before 0042 (the transaction-local mark was for 0042's cache)
CREATE OR REPLACE FUNCTION core.note_child_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO core.child_change (xid) VALUES (pg_current_xact_id()) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
