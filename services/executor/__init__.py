"""aragog.executor service."""
