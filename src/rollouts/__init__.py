"""rollouts: progressive delivery with Argo Rollouts-compatible resources."""

__version__ = "0.1.0"
__all__ = ["__version__"]
