"""nxkit: language models explaining the neurons of language models (Bills et al., 2023, made to run today)."""

__version__ = "0.1.0"
