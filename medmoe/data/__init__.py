"""Cohort loading + validation, missing-modality placeholders, demo cohorts, public-format adapters."""

from .adni_adapter import build_adni_cohort
from .cache_dataset import CacheDataset
from .cohort import SPLITS, Cohort, CohortError, check_readable, load_cohort
from .datasets import CACHE_MODES, make_dataset, transform_fingerprint
from .demo_adni import adni_demo_cohort, make_adni_demo
from .demo_embed import embed_demo_cohort, make_embed_demo
from .demo_fastmri import fastmri_demo_cohort, make_fastmri_demo
from .demo_gamma import gamma_demo_cohort, make_gamma_demo
from .fastmri_adapter import build_fastmri_cohort, fastmri_label_groups
from .gamma_adapter import build_gamma_cohort, read_gamma_grades
from .mammo_tables import AdaptedCohort
from .missing import FillMissingMasksd, FillMissingModalitiesd
from .rsna_adapter import rsna_to_cohort
from .split import split_by_patient
from .tabular import TabularPreprocessor, TabularToVectord, load_tabular_cohort
from .vindr_adapter import vindr_to_cohort

__all__ = [
    "AdaptedCohort",
    "SPLITS",
    "CacheDataset",
    "CACHE_MODES",
    "make_dataset",
    "transform_fingerprint",
    "TabularPreprocessor",
    "TabularToVectord",
    "adni_demo_cohort",
    "build_adni_cohort",
    "load_tabular_cohort",
    "make_adni_demo",
    "Cohort",
    "CohortError",
    "FillMissingMasksd",
    "FillMissingModalitiesd",
    "build_gamma_cohort",
    "gamma_demo_cohort",
    "make_gamma_demo",
    "read_gamma_grades",
    "check_readable",
    "build_fastmri_cohort",
    "embed_demo_cohort",
    "fastmri_demo_cohort",
    "fastmri_label_groups",
    "load_cohort",
    "make_embed_demo",
    "make_fastmri_demo",
    "rsna_to_cohort",
    "split_by_patient",
    "vindr_to_cohort",
]
