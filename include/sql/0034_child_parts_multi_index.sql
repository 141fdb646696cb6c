-- Match stage (issue 15): a small run's surname-parts key probes LA children whose surname has
-- several parts (double-barrelled, hyphenated) with `m_sn_parts @> ARRAY[part]`. The GIN index
-- over every child's parts (0010) holds a common part ("smith") for thousands of single-part
-- surnames, so each probe read them all (~11 ms a key at 80k children); this one holds only
-- the multi-part surnames the branch asks for (cardinality > 1), a few per cent of the LA.
CREATE INDEX child_m_parts_multi_idx ON core.child USING gin (m_sn_parts) WHERE cardinality(m_sn_parts) > 1;
