"""Workflow declarations shipped with Aragog."""
