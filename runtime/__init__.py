"""Runtimes that load exported artifacts and expose the same denoiser/encoder callables as torch.

Installed as ``clsp.runtime``; the top-level name ``runtime`` is not a package.
"""

if __name__ != "clsp.runtime":
    raise ImportError(f"this folder is the package 'clsp.runtime'; import it by that name, not as {__name__!r}")
