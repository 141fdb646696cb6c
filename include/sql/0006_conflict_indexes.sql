-- The conflicts stage counts a base's open conflicts and checks a child's on every run:
-- index the observations by base and the resolutions by child and field.
CREATE INDEX conflict_obs_base_idx ON results.conflict_observation (base_id);
CREATE INDEX conflict_resolution_person_idx ON results.conflict_resolution (person_id, field);
