"""radiusd: a RADIUS authentication server with multi-factor authentication."""

__version__ = "0.1.0"
