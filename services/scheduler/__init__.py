"""aragog.scheduler service."""
