"""aragog.router service."""
