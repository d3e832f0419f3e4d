"""Cohort loading + validation, missing-modality placeholders, demo cohorts, public-format adapters."""

from .cohort import SPLITS, Cohort, CohortError, check_readable, load_cohort
from .demo_embed import embed_demo_cohort, make_embed_demo
from .missing import FillMissingModalitiesd

__all__ = [
    "SPLITS",
    "Cohort",
    "CohortError",
    "FillMissingModalitiesd",
    "check_readable",
    "embed_demo_cohort",
    "load_cohort",
    "make_embed_demo",
]
