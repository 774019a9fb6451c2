"""Datasets of SIAD-LLM: readers, pseudo-anomalies and SIAD-Synth (filled in by the data issue)."""
