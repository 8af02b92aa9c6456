"""The version of ugvae, in one place (setup.cfg reads it too)."""

__version__ = "0.3.0"
