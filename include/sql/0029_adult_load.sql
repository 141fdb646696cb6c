-- F14 (issue 14 part 5): the LA's adults (parents and carers it holds) are loaded by
-- `b2b core load --adults` and the nightly refresh (adults*.csv); each load is recorded.
ALTER TABLE core.load_run DROP CONSTRAINT IF EXISTS load_run_kind_check;
ALTER TABLE core.load_run ADD CONSTRAINT load_run_kind_check CHECK (kind IN ('children', 'gazetteer', 'adults'));
-- the carers' candidate query (b2b.reconcile.match_stage.match_carers) selects adults by
-- normalised surname or postcode: without these it reads the whole table on every run
CREATE INDEX IF NOT EXISTS adult_norm_surname_idx ON core.adult ((regexp_replace(lower(surname), '[^a-z]', '', 'g')));
CREATE INDEX IF NOT EXISTS adult_norm_postcode_idx ON core.adult ((upper(replace(postcode, ' ', ''))));
