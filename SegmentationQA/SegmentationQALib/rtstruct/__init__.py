"""RTSTRUCT."""
