"""Pure-Python core shared by both modules. Never imports slicer, vtk or qt.

Geometry convention: arrays are indexed [slice, row, column] (k, j, i); an ``affine_lps`` maps the
homogeneous voxel index (i, j, k, 1) to patient LPS millimetres.
"""
