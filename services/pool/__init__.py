"""aragog.pool service."""
