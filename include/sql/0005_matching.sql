-- 0005 matching that an LA can trust (issue 5): officer decisions, the lists officers work.

-- Every officer decision, kept for audit (who, when, what) and honoured by later runs:
--   confirm   a proposed ('possible') candidate is the child  -> GUID link (linked_by 'officer')
--   reject    a candidate is NOT the child                     -> never proposed again
--   link      link a school student to a child by hand         -> GUID link
--   new_child create an LA child from an unmatched record      -> new core.child + link
CREATE TABLE results.match_decision (
    decision_id   bigserial PRIMARY KEY,
    base_id       text NOT NULL,
    student_guid  text NOT NULL,
    person_id     text NOT NULL,
    decision      text NOT NULL CHECK (decision IN ('confirm', 'reject', 'link', 'new_child')),
    decided_by    text NOT NULL,
    decided_at    timestamptz NOT NULL DEFAULT now(),
    note          text
);
CREATE INDEX match_decision_key_idx ON results.match_decision (base_id, student_guid);

-- Decisions that link a school student to a child: the chain's conflicts and apply stages
-- work on these only ('possible' candidates are never treated as links).
CREATE VIEW results.current_link AS
SELECT * FROM results.current_match WHERE status IN ('matched', 'matched_with_conflicts');

-- The Unmatched list (F13): the latest decision per school student that is unmatched,
-- hidden ones (older than B2B_S_AGE) flagged, with the student's identifying data.
CREATE VIEW results.unmatched AS
SELECT m.base_id, m.student_guid, m.age_years, m.hidden, m.explanation, m.matched_at,
       s.upn, s.forename, s.middle_names, s.surname, s.gender, s.dob
  FROM results.current_match m
  JOIN staging.student s ON s.file_id = m.file_id AND s.student_guid = m.student_guid
 WHERE m.status = 'unmatched';

-- The Possible-matches queue: one row per proposed candidate, with the explanation.
CREATE VIEW results.possible_match AS
SELECT m.base_id, m.student_guid, m.person_id AS candidate_person_id, m.score, m.explanation, m.matched_at,
       s.upn, s.forename, s.surname, s.gender, s.dob,
       c.upn AS la_upn, c.forename AS la_forename, c.surname AS la_surname, c.gender AS la_gender, c.dob AS la_dob,
       c.postcode AS la_postcode
  FROM results.current_match m
  JOIN staging.student s ON s.file_id = m.file_id AND s.student_guid = m.student_guid
  JOIN core.child c ON c.person_id = m.person_id
 WHERE m.status = 'possible';
