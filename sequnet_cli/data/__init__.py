"""Datasets: piano-roll benchmarks and raw-audio corpora, decoded once and cached."""
