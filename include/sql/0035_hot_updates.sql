-- Issue 15: every block a run stores is written again by the hash filter (hash, disposition) and
-- by load (disposition 'loaded'), and every hash-cache entry again by the run's last stage
-- (committed). None of those columns is indexed, so with room on the page PostgreSQL updates the
-- row in place (a HOT update: no new entry in any index). Tables filled to 100% (the default)
-- have no room: each of those updates wrote the row to another page plus one entry per index.
-- Leaving half of each new page free for the updated versions makes them HOT; the space is
-- what the moved rows took anyway until vacuum. Existing pages are left as they are.
ALTER TABLE raw.inbound_block SET (fillfactor = 50);
ALTER TABLE ops.hash_cache SET (fillfactor = 50);
