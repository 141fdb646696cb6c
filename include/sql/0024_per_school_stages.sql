-- Per-school stages (issue 15): an incremental contacts run finds the contacts linked to the
-- students it touched (core.contact_link's key starts with the person, not the student).
CREATE INDEX contact_link_student_idx ON core.contact_link (base_id, student_guid);
