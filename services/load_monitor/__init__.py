"""aragog.load_monitor service."""
