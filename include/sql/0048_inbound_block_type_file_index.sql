-- Issue 15: 0045's index on raw.inbound_block (file_id, block_type) also matched the foreign-key
-- checks of every table that references a block by (file_id, ordinal): staging.*, the hash
-- cache, rejected blocks. Once raw.inbound_block is analysed while its files are each a common
-- value (autovacuum does this early in an LA's first snapshot), the planner estimates a new
-- file at one row, and the checks' custom plans chose that index with `ordinal` as a filter:
-- each referencing row read every block of its file, so a school's load grew with the square
-- of its size (the load stage 6x slower in the stage bench). With block_type leading, the index
-- serves only the statements that name a block type (`block_type = '…' AND file_id = ANY(…)`:
-- load's inserts, apply's SEN and exclusions reads), and the foreign-key checks keep the
-- primary key (file_id, ordinal).
DROP INDEX IF EXISTS raw.inbound_block_file_type_idx;
CREATE INDEX IF NOT EXISTS inbound_block_type_file_idx ON raw.inbound_block (block_type, file_id);
