-- 0013 rejected blocks (issue 9 items 2 and 11): pupils the extract stage received but must not
-- process, and why.
--
-- * rule 'duplicate_pupil': the same pupil twice in one message (a SIMS 7 file) or twice in one
--   SIMS Primary data group of a run. Neither copy is processed (we cannot tell which is right);
--   every block of both copies has a row here.
-- * rule 'pupil_schema': a pupil of a structurally sound SIMS 7 message that fails the XSD or a
--   type (an invalid DOB, an over-long name). Its blocks are not stored; one empty anchor block
--   (block_type 'student', content {}) is, so the anomaly can point at it.
--
-- The validate stage marks these blocks 'invalid' and copies the rows with report = true into
-- results.anomaly (severity error). Rows go with their file (ON DELETE CASCADE), so a rerun of
-- the window rebuilds them. ``detail`` names the position and line, never a value.
CREATE TABLE raw.rejected_block (
    file_id   bigint  NOT NULL,
    ordinal   int     NOT NULL,
    rule      text    NOT NULL CHECK (rule IN ('duplicate_pupil', 'pupil_schema')),
    field     text,
    detail    text    NOT NULL,
    report    boolean NOT NULL DEFAULT true,  -- one reported row per pupil copy; others only mark
    PRIMARY KEY (file_id, ordinal),
    FOREIGN KEY (file_id, ordinal) REFERENCES raw.inbound_block (file_id, ordinal) ON DELETE CASCADE
);
