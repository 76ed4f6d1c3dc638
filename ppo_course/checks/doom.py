"""Checks for the exercises (being written)."""

__all__: list[str] = []
