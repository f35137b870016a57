"""Evaluation protocols: (task, encoder, seed, label fraction) -> metrics + per-case scores (base.py)."""
