"""Evaluation: confusion-matrix metrics, scoring of prediction folders, reports and plots."""
