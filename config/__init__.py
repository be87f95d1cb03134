"""The example configuration, installed as ``radiusd.examples``: ``radiusd init-config PATH``
writes ``radiusd.toml`` from here."""
