"""Scores of predicted mixtures: the metrics contract (contract.py: thresholds, rules, key names,
statuses; torch-free), calibration and proper scores (calibration.py), component health
(health.py) and the scores every task shares (scores.py)."""
