"""Analytic dose fields (dose linear in position) on every awkward RTDOSE geometry, resampled onto a CT grid.

Linear interpolation reproduces a linear field exactly, so the only way to exceed 1e-3 Gy is a geometry mistake.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import generate_uid

from data_builders import synthetic_dose as synthetic
from DicomFidelityCommonLib.errors import FrameOfReferenceMismatchError
from DicomFidelityCommonLib.geometry import VolumeGeometry, affine_from_dicom
from DoseAlignmentLib.align import align, read_reference
from DoseAlignmentLib.resample import Direction, Interpolation
from DoseAlignmentLib.rtdose import OffsetKind, read_rtdose

FIELD = synthetic.linear_field((0.05, -0.03, 0.04), 20.0)
FOR_UID = generate_uid()
CT_GEOMETRY = VolumeGeometry((26, 30, 34),
                             affine_from_dicom([-48.0, -40.0, -39.0], [1, 0, 0, 0, 1, 0], [2.7, 2.9], 3.0))


def _rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


OBLIQUE = _rotation([0.3, 1.0, 0.2], 25.0)
NON_UNIFORM = [0, 2.0, 5.0, 7.5, 12.0, 13.0, 18.0, 21.5, 25.0, 31.0, 33.0, 40.0]

# name: (ImagePositionPatient, ImageOrientationPatient, PixelSpacing (row, col), rows, cols,
#        relative offsets, absolute?)
CASES = {
    "uniform-axial": ([-30.0, -25.0, -30.0], [1, 0, 0, 0, 1, 0], [3.0, 3.0], 18, 20, np.arange(16) * 3.0, False),
    "non-square-anisotropic": ([-30.0, -25.0, -30.0], [1, 0, 0, 0, 1, 0], [2.0, 3.5], 26, 17, np.arange(13) * 4.0,
                               False),
    "non-uniform": ([-31.0, -26.0, -28.0], [1, 0, 0, 0, 1, 0], [2.5, 3.0], 20, 20, NON_UNIFORM, False),
    "absolute": ([-30.0, -25.0, -30.0], [1, 0, 0, 0, 1, 0], [3.0, 2.5], 18, 24, np.arange(15) * 3.5, True),
    "descending": ([-30.0, -25.0, 25.0], [1, 0, 0, 0, 1, 0], [2.5, 2.5], 22, 24, -np.arange(14) * 4.0, False),
    "descending-non-uniform-absolute": ([-30.0, -25.0, 20.0], [1, 0, 0, 0, 1, 0], [3.0, 2.0], 18, 30,
                                        -np.asarray(NON_UNIFORM), True),
    "feet-first": ([30.0, -25.0, 20.0], [-1, 0, 0, 0, 1, 0], [2.5, 3.0], 22, 20, np.arange(14) * 3.5, False),
    "feet-first-absolute": ([30.0, -25.0, 20.0], [-1, 0, 0, 0, 1, 0], [3.0, 3.0], 18, 20, np.arange(14) * 3.0, True),
    "prone": ([30.0, 28.0, -30.0], [-1, 0, 0, 0, -1, 0], [3.0, 2.0], 18, 30, np.arange(14) * 3.5, False),
    "oblique": ([-22.0, -30.0, -12.0], [*OBLIQUE[:, 0], *OBLIQUE[:, 1]], [2.5, 3.2], 20, 18, np.arange(14) * 3.0,
                False),
    "oblique-non-uniform": ([-22.0, -30.0, -12.0], [*OBLIQUE[:, 0], *OBLIQUE[:, 1]], [3.2, 2.5], 18, 20, NON_UNIFORM,
                            False),
}


def write_case(tmp_path, name, frame_of_reference_uid=FOR_UID, field=FIELD, **kwargs):
    position, orientation, spacing, rows, cols, offsets, absolute = CASES[name]
    return synthetic.write_rtdose(tmp_path / f"{name}.dcm", field, position, orientation, spacing, rows, cols, offsets,
                                  frame_of_reference_uid, absolute_offsets=absolute, **kwargs)


def inside_hull(grid, points):
    """Points strictly inside the hull of the dose voxel centres, and their dose-grid coordinates."""
    o = grid.image_orientation
    rel = points - grid.image_position
    i = rel @ o[:3] / grid.pixel_spacing[1]
    j = rel @ o[3:] / grid.pixel_spacing[0]
    s = rel @ grid.normal
    offsets = np.asarray(grid.frame_offsets)
    eps = 1e-6
    inside = ((i >= -eps) & (i <= grid.shape[2] - 1 + eps) & (j >= -eps) & (j <= grid.shape[1] - 1 + eps)
              & (s >= offsets.min() - eps) & (s <= offsets.max() + eps))
    return inside, (i, j, s)


def ct_points(geometry=CT_GEOMETRY):
    k, j, i = np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij")
    return geometry.index_to_lps(np.stack([i, j, k], -1).reshape(-1, 3)).reshape(*geometry.shape, 3)


@pytest.fixture(scope="module")
def ct_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    synthetic.write_ct_series(folder, CT_GEOMETRY, FOR_UID)
    return folder


@pytest.mark.parametrize("name", sorted(CASES))
def test_linear_dose_is_exact_on_every_geometry(tmp_path, ct_folder, name):
    path = write_case(tmp_path, name)
    result = align([path], ct_folder)
    grid = read_rtdose(path)
    # output geometry is the CT's, whatever the dose grid looked like
    assert result.geometry.is_close(CT_GEOMETRY, 1e-4)
    assert result.dose.shape == CT_GEOMETRY.shape
    points = ct_points()
    inside, _ = inside_hull(grid, points)
    assert inside.sum() > 500, "test geometry must put many CT voxels inside the dose grid"
    error = np.abs(result.dose[inside] - FIELD(points[inside]))
    assert error.max() < 1e-3, f"{name}: max error {error.max():.2e} Gy"
    assert result.inside_dose_grid[inside].all()
    # far outside the dose grid (more than a voxel beyond the centres) the dose is exactly 0
    widened, (i, j, s) = inside_hull(grid, points)
    offsets = np.asarray(grid.frame_offsets)
    far = ((i < -1) | (i > grid.shape[2]) | (j < -1) | (j > grid.shape[1])
           | (s < offsets.min() - 10) | (s > offsets.max() + 10))
    assert far.any()
    assert np.all(result.dose[far] == 0)
    if name.endswith("absolute"):
        assert grid.offset_kind == OffsetKind.ABSOLUTE


@pytest.mark.parametrize("name", ["non-uniform", "oblique-non-uniform", "feet-first"])
def test_nearest_picks_the_nearest_dose_voxel(tmp_path, ct_folder, name):
    path = write_case(tmp_path, name)
    grid = read_rtdose(path)
    result = align([path], ct_folder, interpolation=Interpolation.NEAREST)
    points = ct_points()
    inside, (i, j, s) = inside_hull(grid, points)
    inside, i, j, s = inside.ravel(), i.ravel(), j.ravel(), s.ravel()
    offsets = np.asarray(grid.frame_offsets)
    distance = np.sort(np.abs(s[:, None] - offsets[None, :]), axis=1)
    # half-way points are legitimately ambiguous: leave them out
    unambiguous = ((distance[:, 1] - distance[:, 0] > 1e-3) & (np.abs(np.abs(i % 1) - 0.5) > 1e-3)
                   & (np.abs(np.abs(j % 1) - 0.5) > 1e-3))
    inside &= unambiguous
    assert inside.sum() > 300
    frame = np.argmin(np.abs(s[inside][:, None] - offsets[None, :]), axis=1)
    expected = grid.dose[frame, np.rint(j[inside]).astype(int), np.rint(i[inside]).astype(int)]
    assert np.abs(result.dose.ravel()[inside] - expected).max() < 1e-4


@pytest.mark.parametrize("name", ["uniform-axial", "non-uniform"])
def test_bspline_interior_exact_and_never_negative(tmp_path, ct_folder, name):
    path = write_case(tmp_path, name)
    grid = read_rtdose(path)
    result = align([path], ct_folder, interpolation="bspline")
    points = ct_points()
    o = grid.image_orientation
    rel = points - grid.image_position
    i, j = rel @ o[:3] / grid.pixel_spacing[1], rel @ o[3:] / grid.pixel_spacing[0]
    s = rel @ grid.normal
    offsets = np.sort(grid.frame_offsets)
    # cubic B-splines reproduce linear fields except near the mirrored boundary
    interior = ((i > 3) & (i < grid.shape[2] - 4) & (j > 3) & (j < grid.shape[1] - 4)
                & (s > offsets[3]) & (s < offsets[-4]))
    assert interior.sum() > 100
    assert np.abs(result.dose[interior] - FIELD(points[interior])).max() < 1e-3
    if name == "non-uniform":
        assert any("B-spline on non-uniform" in w for w in result.warnings)
    # a dose step (0 next to 30 Gy) makes cubic interpolation undershoot: the clamp keeps dose >= 0
    step = write_case(tmp_path, name, field=lambda p: np.where(np.asarray(p)[..., 0] > -3.0, 30.0, 0.0))
    stepped = align([step], ct_folder, interpolation="bspline")
    assert stepped.dose.min() >= 0
    assert stepped.dose.max() > 29


@pytest.mark.parametrize("name", ["uniform-axial", "oblique-non-uniform"])
def test_ct_to_dose_samples_ct_at_dose_voxels(tmp_path, name):
    ct_field = synthetic.linear_field((2.0, -1.5, 3.0), 5.0)
    folder = tmp_path / "ct"
    synthetic.write_ct_series(folder, CT_GEOMETRY, FOR_UID, field=ct_field)
    path = write_case(tmp_path, name)
    grid = read_rtdose(path)
    result = align([path], folder, direction=Direction.CT_TO_DOSE)
    assert result.reference_array.shape == result.dose.shape == grid.shape
    assert np.allclose(result.dose, grid.dose, atol=1e-5)  # the dose itself is untouched
    centres = grid.voxel_centers_lps()
    index = CT_GEOMETRY.lps_to_index(centres.reshape(-1, 3)).reshape(*grid.shape, 3)
    inside = np.all((index >= 0) & (index <= np.array(CT_GEOMETRY.shape[::-1]) - 1), axis=-1)
    assert inside.sum() > 200
    # CT stores rounded HU: 0.5 HU from rounding, nothing from geometry
    assert np.abs(result.reference_array[inside] - ct_field(centres[inside])).max() < 0.51
    outside = ~np.all((index >= -1) & (index <= np.array(CT_GEOMETRY.shape[::-1])), axis=-1)
    assert np.all(result.reference_array[outside] == -1000)
    if name == "oblique-non-uniform":
        assert result.geometry is None and np.allclose(result.frame_offsets, grid.frame_offsets)


def test_registration_aligns_a_different_frame_of_reference(tmp_path, ct_folder):
    rotation = _rotation([0, 0, 1], 12.0)
    dose_to_ct = np.eye(4)
    dose_to_ct[:3, :3] = rotation
    dose_to_ct[:3, 3] = [4.0, -3.0, 2.5]

    def field_in_dose_frame(points):  # the same physical dose, described in the dose's own frame
        return FIELD(np.asarray(points) @ rotation.T + dose_to_ct[:3, 3])

    path = write_case(tmp_path, "non-uniform", frame_of_reference_uid=generate_uid(), field=field_in_dose_frame)
    with pytest.raises(FrameOfReferenceMismatchError, match="non-uniform.dcm"):
        align([path], ct_folder)
    result = align([path], ct_folder, registration=dose_to_ct)
    grid = read_rtdose(path)
    points = ct_points()
    in_dose_frame = (points - dose_to_ct[:3, 3]) @ rotation  # inverse rigid transform
    inside, _ = inside_hull(grid, in_dose_frame)
    assert inside.sum() > 500
    assert np.abs(result.dose[inside] - FIELD(points[inside])).max() < 1e-3


def test_reference_may_be_a_volume_file(tmp_path, ct_folder):
    import SimpleITK as sitk

    reference = read_reference(ct_folder)
    volume = tmp_path / "ct.nii.gz"
    sitk.WriteImage(reference.geometry.to_sitk(reference.array()), str(volume))
    path = write_case(tmp_path, "oblique")
    from_file = align([path], volume)
    from_folder = align([path], ct_folder)
    assert from_file.geometry.is_close(from_folder.geometry, 1e-4)
    assert np.abs(from_file.dose - from_folder.dose).max() < 1e-4
    assert any("FrameOfReferenceUID" in w for w in from_file.warnings)


def test_statistics_report_what_was_kept(tmp_path, ct_folder):
    # half of this dose grid lies beyond the CT's right edge (x > 47.7 mm)
    path = synthetic.write_rtdose(tmp_path / "poking-out.dcm", FIELD, [20.0, -25.0, -30.0], [1, 0, 0, 0, 1, 0],
                                  [3.0, 3.0], 18, 20, np.arange(16) * 3.0, FOR_UID)
    result = align([path], ct_folder)
    stats = result.statistics
    grid = read_rtdose(path)
    assert stats.max_dose_in == pytest.approx(grid.dose.max())
    assert 0 < stats.fraction_dose_voxels_outside_reference < 1  # the dose grid pokes out of the small CT
    assert stats.fraction_dose_integral_outside_reference > 0
    assert stats.max_dose_out <= stats.max_dose_in + 1e-3
    # integrals over the common region agree to the discretisation of two different grids
    assert stats.integral_out_common_gy_ml == pytest.approx(stats.integral_in_common_gy_ml, rel=0.1)
    data = result.to_json()
    assert data["max_dose_in"] == stats.max_dose_in and "timings_seconds" in data


def test_gantry_tilted_ct_keeps_its_sheared_grid(tmp_path):
    affine = CT_GEOMETRY.affine_lps.copy()
    affine[1, 2] = 0.6  # each slice 0.6 mm further posterior: an 11 degree gantry tilt
    tilted = VolumeGeometry(CT_GEOMETRY.shape, affine)
    synthetic.write_ct_series(tmp_path / "ct", tilted, FOR_UID)
    path = write_case(tmp_path, "non-uniform")
    result = align([path], tmp_path / "ct")
    assert any("gantry tilt" in w for w in result.warnings)
    assert result.geometry.is_close(tilted, 1e-4)
    points = ct_points(tilted)
    inside, _ = inside_hull(read_rtdose(path), points)
    assert inside.sum() > 500
    assert np.abs(result.dose[inside] - FIELD(points[inside])).max() < 1e-3
