"""Reasoning heads: sequence → sequence, read as differential equations in depth or pseudo-time."""
