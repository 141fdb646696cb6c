-- 0010 matching keys on the LA's child records, normalised exactly as b2b/matching.py does
-- (the accent table is b2b.matching.ACCENTS_FROM/ACCENTS_TO; a test keeps them equal), stored and
-- indexed so each run's candidate query is index lookups instead of a scan with regexes.
ALTER TABLE core.child
    ADD COLUMN m_sn text GENERATED ALWAYS AS (regexp_replace(translate(lower(surname), 'àáâãäåāăąçćčďèéêëēėęěğìíîïīįıłñńňòóôõöøōőŕřśšşťùúûüūůűųýÿžźż', 'aaaaaaaaacccdeeeeeeeegiiiiiiilnnnoooooooorrssstuuuuuuuuyyzzz'), '[^a-z]', '', 'g')) STORED,
    ADD COLUMN m_sn_parts text[] GENERATED ALWAYS AS
        (regexp_split_to_array(replace(translate(lower(surname), 'àáâãäåāăąçćčďèéêëēėęěğìíîïīįıłñńňòóôõöøōőŕřśšşťùúûüūůűųýÿžźż', 'aaaaaaaaacccdeeeeeeeegiiiiiiilnnnoooooooorrssstuuuuuuuuyyzzz'), chr(39), ''), '[^a-z]+')) STORED,
    ADD COLUMN m_fn text GENERATED ALWAYS AS (regexp_replace(translate(lower(forename), 'àáâãäåāăąçćčďèéêëēėęěğìíîïīįıłñńňòóôõöøōőŕřśšşťùúûüūůűųýÿžźż', 'aaaaaaaaacccdeeeeeeeegiiiiiiilnnnoooooooorrssstuuuuuuuuyyzzz'), '[^a-z]', '', 'g')) STORED,
    ADD COLUMN m_pc text GENERATED ALWAYS AS (upper(regexp_replace(postcode, '[^A-Za-z0-9]', '', 'g'))) STORED,
    ADD COLUMN m_upn text GENERATED ALWAYS AS (upper(replace(upn, ' ', ''))) STORED,
    ADD COLUMN m_year int GENERATED ALWAYS AS (extract(year FROM dob)::int) STORED;
CREATE INDEX child_m_sn_idx ON core.child (m_sn, m_year);
CREATE INDEX child_m_fn_sn_idx ON core.child (m_fn, m_sn);
CREATE INDEX child_m_pc_idx ON core.child (m_pc, m_year);
CREATE INDEX child_m_upn_idx ON core.child (m_upn);
CREATE INDEX child_m_parts_idx ON core.child USING gin (m_sn_parts);
