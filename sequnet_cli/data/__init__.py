"""Datasets: piano-roll benchmarks and raw-audio corpora, decoded once and cached."""

# The three parts every data set is divided into, in this order.
SPLITS = ("train", "valid", "test")
