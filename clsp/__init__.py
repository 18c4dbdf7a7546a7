"""clsp: Contrastive Learning with Synthetic Positives (Zeng et al., ECCV 2024, arXiv 2408.16965)."""

from clsp.errors import ClspError

__version__ = "0.1.0"

__all__ = ["ClspError", "__version__"]
