"""Inputs of the 2D tasks: images, masks and rectangles, with errors that name the field and file."""
import numpy as np
import pytest
import torch
from PIL import Image

from dreamsampler.image_io import latent_mask, read_image, read_mask, rect_mask, square_resize


def test_reads_png_jpeg_and_skimage(tmp_path):
    arr = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(arr).save(tmp_path / "a.jpg")
    png = read_image(str(tmp_path / "a.png"), "system.image")
    assert png.shape == (3, 30, 40) and torch.allclose(png, torch.from_numpy(arr).permute(2, 0, 1) / 255.0)
    assert read_image(str(tmp_path / "a.jpg"), "system.image").shape == (3, 30, 40)
    cat = read_image("skimage:chelsea", "system.image")
    assert cat.shape == (3, 300, 451) and 0 <= cat.min() and cat.max() <= 1
    out = square_resize(cat, 64)
    assert out.shape == (3, 64, 64) and out.std() > 0.05


def test_bad_images_name_the_field_and_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"system.image: image file '.*missing.png' does not exist"):
        read_image(str(tmp_path / "missing.png"), "system.image")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"system.image: cannot read image file '.*junk.png'"):
        read_image(str(tmp_path / "junk.png"), "system.image")
    with pytest.raises(ValueError, match="scikit-image has no image 'dragon'"):
        read_image("skimage:dragon", "system.image")
    with pytest.raises(ValueError, match="system.image is empty"):
        read_image("", "system.image")


def test_mask_files_must_have_the_image_size(tmp_path):
    m = np.zeros((30, 40), np.uint8)
    m[5:10, 5:20] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    mask = read_mask(str(tmp_path / "m.png"), "system.regions[0].mask", (30, 40), "system.image")
    assert mask.shape == (1, 30, 40) and mask.sum() == 75
    with pytest.raises(ValueError, match=r"system.regions\[0\].mask: mask file '.*m.png' is 30x40 but the image \(system.image\) is 32x32"):
        read_mask(str(tmp_path / "m.png"), "system.regions[0].mask", (32, 32), "system.image")


def test_rectangles_and_latent_masks():
    r = rect_mask([0.25, 0.5, 0.75, 1.0], 16, 8, "system.regions[1].rect")
    assert r.shape == (1, 16, 8) and r[0, 8:, 2:6].all() and r.sum() == 32
    with pytest.raises(ValueError, match=r"system.regions\[1\].rect: rectangle \[0.5, 0.2, 0.4, 0.9\] must satisfy"):
        rect_mask([0.5, 0.2, 0.4, 0.9], 16, 16, "system.regions[1].rect")
    with pytest.raises(ValueError, match=r"\[x0, y0, x1, y1\]"):
        rect_mask([0.1, 0.2], 16, 16, "system.regions[1].rect")
    lat = latent_mask(rect_mask([0.0, 0.0, 0.3, 0.3], 32, 32, "r")[None], 8)
    assert lat.shape == (1, 1, 4, 4) and lat[0, 0, :2, :2].all() and lat.sum() == 4


def test_world_icons_are_read_by_index_from_the_held_out_split():
    from dreamsampler.world import world_image

    img = read_image("world:124", "system.image")
    assert img.shape == (3, 64, 64) and torch.equal(img, world_image("eval", 124, "icon")[0])
    with pytest.raises(ValueError, match=r"system.image='world:red': a world icon is world:<index>"):
        read_image("world:red", "system.image")
