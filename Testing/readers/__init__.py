"""Independent readers of our DICOM SEG outputs: one small adapter per reader (pydicom, highdicom, dcmqi, DCMTK, GDCM,
dcmjs, Cornerstone3D, Orthanc), each returning the segments it decoded, or why it cannot read the file. matrix.py
runs every output kind through every reader and compares each decoded segment with the source labels, voxel by voxel.
"""
