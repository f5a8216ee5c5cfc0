"""Datasets: the SynthParts generator, the hierarchical annotation model and readers/writers."""
