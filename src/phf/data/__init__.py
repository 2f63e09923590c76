"""Data: corpus sources, segmenting, scoring a corpus, and packing token blocks."""
