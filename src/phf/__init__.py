"""phf: pretraining language models with human feedback (Korbak et al., 2023)."""

__version__ = "0.1.0"
