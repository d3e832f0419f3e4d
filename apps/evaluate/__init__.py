"""Evaluation command line: ``python -m medmoe.apps.evaluate {auroc,dice}`` (see docs/evaluation.md).

A thin layer over :mod:`medmoe.metrics`, where the statistics, reports and plots live; use that package from
Python:

Example:
    >>> from medmoe.metrics import evaluate_classification, write_report
    >>> write_report(evaluate_classification(df_pred, df_true), "eval/")  # doctest: +SKIP
"""
