"""What SegmentationQA and DoseAlignment share, owned by neither: errors, geometry, DICOM reading, safe writing,
value encoding, progress, the MRML helpers and the command-line contract.

Everything here except ``mrml`` is pure Python (numpy, pydicom, SimpleITK): no slicer, vtk or qt.
Geometry convention: arrays are indexed [slice, row, column] (k, j, i); an ``affine_lps`` maps the homogeneous voxel
index (i, j, k, 1) to patient LPS millimetres.
"""
