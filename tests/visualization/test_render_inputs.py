"""render_png writes the image type its name asks for (PNG or JPEG) or refuses; a view range must
be a real rectangle."""
import numpy as np
import pytest
from matplotlib.image import imread

from visualization import render_png, scene_panel
from visualization.render import check_extent, render_panel_images


def cloud() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.column_stack([rng.uniform(-5, 5, (500, 2)), rng.uniform(-1, 1, 500), rng.uniform(0, 1, 500)])


@pytest.mark.parametrize("name, magic", [("view.png", b"\x89PNG"), ("view.jpg", b"\xff\xd8\xff"),
                                         ("VIEW.JPEG", b"\xff\xd8\xff")])
def test_the_file_holds_the_format_its_name_says(tmp_path, name, magic):
    path = render_png([scene_panel(cloud())], str(tmp_path / name), size=(160, 120))
    assert (tmp_path / name).read_bytes()[:len(magic)] == magic
    assert imread(path).shape[:2] == (120, 160)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left behind


@pytest.mark.parametrize("name", ["view.bmp", "view", "view.png.txt"])
def test_an_image_name_of_another_type_is_refused_before_rendering(tmp_path, name):
    with pytest.raises(ValueError, match="cannot tell the image format from the name; use one of .jpeg, .jpg, .png"):
        render_png([scene_panel(cloud())], str(tmp_path / name), size=(160, 120))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extent", [(10, 10, -10, -10), (0, -5, 0, 5), (-5, 5, 5, -5), (0, 0, float("nan"), 1)])
def test_an_inverted_or_empty_view_range_is_an_error(tmp_path, extent):
    with pytest.raises(ValueError, match="view range must be"):
        scene_panel(cloud(), extent=extent)
    with pytest.raises(ValueError, match="view range must be"):
        render_png([scene_panel(cloud())], str(tmp_path / "v.png"), size=(160, 120), extent=extent)
    with pytest.raises(ValueError, match="view range must be"):
        render_panel_images([scene_panel(cloud())], 64, 64, extent=extent)
    assert check_extent((-1, -2, 3, 4)) == (-1.0, -2.0, 3.0, 4.0) and check_extent(None) is None


def test_columns_below_one_are_refused(tmp_path):
    with pytest.raises(ValueError, match="columns must be at least 1, got 0"):
        render_png([scene_panel(cloud())], str(tmp_path / "v.png"), size=(160, 120), columns=0)
