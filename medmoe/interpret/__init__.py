"""Interpretation: modality contributions, expert weights, plots."""

from .modality_contributions import contributions_table, dataset_contributions, plot_contributions

__all__ = ["contributions_table", "dataset_contributions", "plot_contributions"]
