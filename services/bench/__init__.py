"""Seeded benchmark generation for the shipped workflows."""
