"""Offline evaluation of routing policies: a synthetic closed-loop market run through the pure core."""
