-- Issue 15 (extract speed): a school's message is kept as raw.inbound_file.payload (about 1 MB of
-- XML for a SIMS 7 snapshot). Postgres compresses it on insert with pglz by default, which cost
-- 0.27 s of server CPU per 36 MB (38 schools), a quarter of the extract stage's Postgres time.
-- lz4 compresses several times faster (to a somewhat bigger size) and is read back transparently:
-- rows stored with pglz stay readable, nothing that reads the payload changes. Servers built
-- without lz4 (the embedded pgserver used by tests and the demo) keep pglz.
DO $$
BEGIN
    ALTER TABLE raw.inbound_file ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4: raw.inbound_file.payload stays compressed with pglz';
END
$$;
