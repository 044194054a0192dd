"""Pure-Python dose core. Shared geometry, series reading and safe writing come from SegmentationQALib.core."""
