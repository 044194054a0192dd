"""DICOM SEG."""
