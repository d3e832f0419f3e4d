"""Cohort loading + validation, missing-modality placeholders, demo cohorts, public-format adapters."""

from .cohort import SPLITS, Cohort, CohortError, check_readable, load_cohort
from .demo_embed import embed_demo_cohort, make_embed_demo
from .demo_fastmri import fastmri_demo_cohort, make_fastmri_demo
from .fastmri_adapter import build_fastmri_cohort, fastmri_label_groups
from .missing import FillMissingModalitiesd

__all__ = [
    "SPLITS",
    "Cohort",
    "CohortError",
    "FillMissingModalitiesd",
    "check_readable",
    "build_fastmri_cohort",
    "embed_demo_cohort",
    "fastmri_demo_cohort",
    "fastmri_label_groups",
    "load_cohort",
    "make_embed_demo",
    "make_fastmri_demo",
]
