-- Issue 15: the match stage's per-run statements over core.child_link look it up by GUID
-- (guid_linked_elsewhere: the same GUID linked under another base) and by file (a rerun
-- deletes the links its file made; deleting a file cascades to them). Neither column leads an
-- index (the key is (base_id, student_guid)), so each per-school run read the whole table:
-- ~5 ms a run at 20,000 links, growing with the LA. Indexes make both a few probes.
CREATE INDEX IF NOT EXISTS child_link_guid_idx ON core.child_link (student_guid);
CREATE INDEX IF NOT EXISTS child_link_file_idx ON core.child_link (file_id);
