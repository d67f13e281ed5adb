"""Evaluation: score a checkpoint on a dataset with the reference protocols, tables and the average drop."""
