"""Surfaces: the CLI, settings, the run store (and, later, the UI and batch jobs)."""
