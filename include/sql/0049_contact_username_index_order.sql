-- Issue 15: the same trap as 0048, on core.contact. Its unique username index was led by
-- base_id, like the primary key (base_id, person_id) that core.contact_link's foreign key
-- references. Once core.contact is analysed, a base it has not seen yet (a school's first
-- snapshot) is estimated at one row, and each contact link's foreign-key check chose the
-- username index with person_id as a filter: every link read all of its base's contacts. Led by
-- the username, the index keeps its uniqueness (one account name per base) and serves the
-- contacts stage's look-up by base and username, and the checks keep the primary key.
DROP INDEX IF EXISTS core.contact_username_key;
CREATE UNIQUE INDEX contact_username_key ON core.contact (lower(username), base_id);
