"""tartan: end-task aware training."""
__version__ = "0.1.0"
