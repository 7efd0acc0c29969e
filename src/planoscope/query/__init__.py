"""Queries over the store: the declared panels and their evaluation, trace search and retrieval."""
