"""Which seeds train what: the one rule that keeps selection and evaluation apart.

* a search trial trains on :func:`search_seeds` (``random_seed``, and ``random_seed + 1, ...``
  for the repeated measures of a multi-fidelity rung);
* a finalist round (``search.finalists`` > 1) on :func:`selection_seeds`
  (``random_seed + SELECTION_SEED_OFFSET + k``);
* the final table on :func:`final_seeds` (``random_seed + FINAL_SEED_OFFSET + k``), the same for
  every row (paired) and disjoint from both: no evaluation re-runs a run that took part in a
  choice (EVIDENCE: selection is not evaluation).
"""

from __future__ import annotations

from .errors import UserError

__all__ = ["FINAL_SEED_OFFSET", "SEED_RULE", "SELECTION_SEED_OFFSET", "final_seeds",
           "search_seeds", "selection_seeds"]

# Evaluation seeds start here; search trials (and their repeated measures) stay below it.
FINAL_SEED_OFFSET = 10_000
SELECTION_SEED_OFFSET = 5_000  # the finalist round's seeds
SEED_RULE = (f"every row is retrained on the same evaluation seeds random_seed + "
             f"{FINAL_SEED_OFFSET} + k (k = 0..n-1); search trials train with seeds from "
             f"random_seed up, a finalist round with random_seed + {SELECTION_SEED_OFFSET} + k, "
             f"so no evaluation re-runs a run that took part in the choice")


def search_seeds(cfg, repeats: int = 1) -> list[int]:
    """The seeds a search trial trains with (one per repeated measure)."""
    if not 1 <= repeats < SELECTION_SEED_OFFSET:
        raise UserError(f"repeats: {repeats}; must be between 1 and "
                        f"{SELECTION_SEED_OFFSET - 1}")
    return [cfg.random_seed + r for r in range(repeats)]


def selection_seeds(cfg) -> list[int]:
    """The seeds of the finalist round (``search.finalists`` > 1): disjoint from the search's
    and from the evaluation seeds, so the round that picks the winner is not its evaluation."""
    return [cfg.random_seed + SELECTION_SEED_OFFSET + k for k in range(cfg.search.final_seeds)]


def final_seeds(cfg) -> list[int]:
    """The evaluation seeds of the final table: disjoint from :func:`search_seeds`."""
    return [cfg.random_seed + FINAL_SEED_OFFSET + k for k in range(cfg.search.final_seeds)]


