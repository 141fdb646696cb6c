-- Issue 15: load inserts each block type's rows into its staging table with one statement per
-- type, and apply reads the SEN and exclusions blocks, all by `file_id = ANY(run files) AND
-- block_type = '…'`. The primary key (file_id, ordinal) found every block of the run for each
-- of those statements and the filter then dropped the other types: a snapshot run read its
-- ~1,100 blocks (~800 heap pages, rows of up to a few kB at fillfactor 50) nine times. With
-- this index each statement reads only its own type's blocks. Neither column is ever updated,
-- so the hash filter's and load's updates of (hash, disposition) stay HOT.
CREATE INDEX IF NOT EXISTS inbound_block_file_type_idx ON raw.inbound_block (file_id, block_type);
