"""Matching school students to LA child records (issues 5, 13, 14; F13, F14, F16, F17).

One level deep, in the order a record goes through:

* :mod:`.normalise` — the comparison columns (names folded to ASCII, postcodes, UPN kinds,
  DOB forms), the same keys the SQL candidate query uses;
* :mod:`.blocking` — candidate pairs from several blocking keys;
* :mod:`.comparisons` — each field a list of labelled levels ``(label, predicate, weight)``
  (Splink's comparison-level idea), Fellegi-Sunter weights in bits;
* :mod:`.decide` — matched / matched_with_conflicts / possible / unmatched, with the
  explanation (level label and weight per field);
* :mod:`.legacy` — the vendor rule, the baseline.

Both the DAG path (``b2b.reconcile.match_stage.match``) and ``b2b match`` (CSV in, CSV out)
call :func:`match`, so they give the same decisions for the same data.
"""
from __future__ import annotations

from b2b.matching.blocking import candidate_pairs
from b2b.matching.comparisons import BY_FIELD, COMPARISONS, PARTS, Comparison, Level, Weights, score_pairs
from b2b.matching.decide import CHUNK, STATUSES, MatchConfig, PreparedCore, candidates, differing, match, prepare_core
from b2b.matching.legacy import legacy_match
from b2b.matching.normalise import (
           ACCENTS_FROM,
           ACCENTS_TO,
           CORE_COLUMNS,
           CORE_OPTIONAL,
           INCOMING_COLUMNS,
           UK_DIMINUTIVES,
           arrow_strings,
           forename_forms,
           name_key,
           name_parts,
           object_strings,
           postcode_key,
           prepare,
)

__all__ = ["ACCENTS_FROM", "ACCENTS_TO", "BY_FIELD", "CHUNK", "COMPARISONS", "CORE_COLUMNS", "CORE_OPTIONAL", "INCOMING_COLUMNS", "PARTS",
           "STATUSES", "UK_DIMINUTIVES", "Comparison", "arrow_strings", "Level", "MatchConfig", "PreparedCore", "Weights", "candidate_pairs",
           "candidates", "differing", "forename_forms", "legacy_match", "match", "name_key", "name_parts", "object_strings",
           "postcode_key", "prepare", "prepare_core", "score_pairs"]
