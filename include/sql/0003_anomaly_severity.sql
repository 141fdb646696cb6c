-- Anomaly severity (from the expectation suite's meta.severity):
--   error   -> the block was not loaded (the student's other blocks were)
--   warning -> recorded for the school's report; the block was loaded
ALTER TABLE results.anomaly
    ADD COLUMN severity text NOT NULL DEFAULT 'error' CHECK (severity IN ('error', 'warning'));
