"""Cohorts: the tasks that run on every case of an indexed DICOM tree, and the `dicomfidelity` command line.

The machinery (index, pairing, runner, manifest) is DicomFidelityCommonLib.cohort; this package owns what needs
both modules: each task calls the same code as the single-case commands (SegmentationQALib, DoseAlignmentLib).
"""
