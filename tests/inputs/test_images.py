"""Decoding, mode conversion, preprocessing and its inverse (deconvnet.images).

Oracles: literal NumPy formulas written here (alpha over white, min-max stretch, palette
lookup, normalisation), hand values (CMYK, EXIF rotations), and Caffe's own blobs for the
old demo (shared data).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconvnet.errors import ImageError, InputError
from deconvnet.inputs import images as images_module
from deconvnet.inputs.images import (
    BUNDLED_PHOTOS,
    bundled_photo,
    deprocess,
    load_image,
    preprocess,
    preprocess_batch,
    require_min_side,
    resized_rgb,
)
from deconvnet.inputs.preprocessing import Preprocessing

RNG = np.random.default_rng(0)
CAFFE_227 = Preprocessing(
    input_size=(227, 227),
    channel_order="BGR",
    scale=255.0,
    mean=(104.00698793, 116.66876762, 122.67891434),
)
TORCHVISION_NONE = Preprocessing(
    input_size=(224, 224), resize_rule="none", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)


def _random_rgb(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Literal alpha compositing over white, rounded to nearest."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.floor(rgb * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)


def _stretch(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.float64)
    return np.round((v - v.min()) / (v.max() - v.min()) * 255).astype(np.uint8)


# ---------------------------------------------------------------- modes


def test_rgb_png_round_trip_is_exact(tmp_path: Path) -> None:
    image = _random_rgb(5, 7)
    Image.fromarray(image).save(tmp_path / "rgb.png")
    loaded = load_image(tmp_path / "rgb.png")
    assert loaded.dtype == np.uint8 and loaded.shape == (5, 7, 3)
    np.testing.assert_array_equal(loaded, image)


def test_grey_and_bilevel_replicate_to_three_channels(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, size=(4, 6), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "l.png")
    np.testing.assert_array_equal(load_image(tmp_path / "l.png"), np.stack([grey] * 3, axis=2))

    bits = RNG.integers(0, 2, size=(4, 6)).astype(bool)
    Image.fromarray(bits).convert("1").save(tmp_path / "one.png")
    expected = np.where(bits, 255, 0).astype(np.uint8)
    np.testing.assert_array_equal(load_image(tmp_path / "one.png"), np.stack([expected] * 3, 2))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_over_white(tmp_path: Path, mode: str) -> None:
    rgb = _random_rgb(6, 5)
    alpha = RNG.integers(0, 256, size=(6, 5), dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255  # fully transparent and fully opaque corners
    if mode == "RGBA":
        Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(tmp_path / "a.png")
        colour = rgb
    else:
        grey = rgb[:, :, 0]
        Image.fromarray(np.dstack([grey, alpha]), mode="LA").save(tmp_path / "a.png")
        colour = np.stack([grey] * 3, axis=2)
    loaded = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(loaded, _over_white(colour, alpha))
    assert tuple(loaded[0, 0]) == (255, 255, 255)
    assert tuple(loaded[0, 1]) == tuple(colour[0, 1])


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    palette = RNG.integers(0, 256, size=(4, 3), dtype=np.uint8)
    indices = RNG.integers(0, 4, size=(5, 6), dtype=np.uint8)
    indices[0, 0] = 2
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.flatten().tolist())
    image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), palette[indices])

    image.save(tmp_path / "p_trns.png", transparency=2)
    expected = palette[indices].copy()
    expected[indices == 2] = 255  # transparent index shows white
    np.testing.assert_array_equal(load_image(tmp_path / "p_trns.png"), expected)
    image.save(tmp_path / "p_trns.gif", transparency=2)
    np.testing.assert_array_equal(load_image(tmp_path / "p_trns.gif"), expected)


def test_cmyk_hand_values(tmp_path: Path) -> None:
    cmyk = np.array([[[255, 0, 0, 0], [0, 0, 0, 255], [0, 0, 0, 0], [0, 255, 255, 0]]], np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    expected = np.array([[[0, 255, 255], [0, 0, 0], [255, 255, 255], [255, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(load_image(tmp_path / "c.tif"), expected)


@pytest.mark.parametrize(
    ("dtype", "suffix", "mode"),
    [(np.uint16, "png", "I;16"), (np.int32, "tif", "I"), (np.float32, "tif", "F")],
)
def test_high_depth_is_stretched_by_its_own_range(
    tmp_path: Path, dtype: type, suffix: str, mode: str
) -> None:
    values = (RNG.integers(1000, 60000, size=(5, 4))).astype(dtype)
    if dtype is np.float32:
        values = values / np.float32(70000.0)  # floats in (0, 1): stretched, not clipped
    path = tmp_path / f"deep.{suffix}"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == mode
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded, np.stack([_stretch(values)] * 3, axis=2))
    assert loaded.min() == 0 and loaded.max() == 255


def test_constant_and_nonfinite_float_images(tmp_path: Path) -> None:
    Image.fromarray(np.full((3, 3), 7.5, np.float32)).save(tmp_path / "flat.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "flat.tif"), 0)
    values = np.array([[0.0, np.nan], [2.0, np.inf]], np.float32)
    Image.fromarray(values).save(tmp_path / "nan.tif")
    expected = np.array([[0, 0], [255, 0]], np.uint8)
    np.testing.assert_array_equal(load_image(tmp_path / "nan.tif")[:, :, 0], expected)


# ---------------------------------------------------------------- orientation


@pytest.mark.parametrize(("orientation", "rot90_k"), [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, rot90_k: int) -> None:
    # 16x32 image of four 8x8-aligned solid blocks per row: survives JPEG almost exactly
    stored = np.zeros((16, 32, 3), np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    for i, colour in enumerate(colours):
        stored[:8, 8 * i : 8 * i + 8] = colour
    stored[8:] = 128
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "o.jpg", quality=95, subsampling=0, exif=exif.tobytes())
    loaded = load_image(tmp_path / "o.jpg")
    # EXIF: 6 = shown rotated 90 deg clockwise, 8 = counter-clockwise, 3 = 180
    expected = np.rot90(stored, k=rot90_k)
    assert loaded.shape == expected.shape
    assert np.abs(loaded.astype(int) - expected.astype(int)).max() <= 12  # JPEG 4:4:4, 8x8 blocks


# ---------------------------------------------------------------- errors


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(IsADirectoryError):
        load_image(tmp_path)


def _truncated_jpeg(tmp_path: Path) -> Path:
    Image.fromarray(_random_rgb(64, 64)).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.jpg"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.png", b""),
        ("text.png", b"this is not an image\n"),
        ("drawing.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        ("half.png", None),
        ("cut.jpg", None),
    ],
)
def test_bad_files_raise_one_line_image_error(
    tmp_path: Path, name: str, content: bytes | None
) -> None:
    if name == "cut.jpg":
        path = _truncated_jpeg(tmp_path)
    elif name == "half.png":
        Image.fromarray(_random_rgb(32, 32)).save(tmp_path / "whole.png")
        data = (tmp_path / "whole.png").read_bytes()
        path = tmp_path / name
        path.write_bytes(data[: len(data) // 2])
    else:
        path = tmp_path / name
        path.write_bytes(content or b"")
    with pytest.raises(ImageError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_decompression_bomb_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(_random_rgb(10, 10)).save(tmp_path / "ok.png")
    Image.fromarray(_random_rgb(11, 10)).save(tmp_path / "over.png")
    Image.fromarray(_random_rgb(30, 30)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert load_image(tmp_path / "ok.png").shape == (10, 10, 3)
    for name in ("over.png", "bomb.png"):  # Pillow only warns for "over": we refuse both
        with pytest.raises(ImageError, match=r"MAX_IMAGE_PIXELS|decompression"):
            load_image(tmp_path / name)


def test_tiny_images_load_and_the_size_check_states_the_minimum(tmp_path: Path) -> None:
    Image.fromarray(_random_rgb(1, 1)).save(tmp_path / "dot.png")
    dot = load_image(tmp_path / "dot.png")
    assert dot.shape == (1, 1, 3)
    with pytest.raises(ImageError, match="at least 32"):
        require_min_side(dot, 32)
    with pytest.raises(ImageError, match="at least 64"):
        preprocess(_random_rgb(40, 80), TORCHVISION_NONE, min_side=64)


# ---------------------------------------------------------------- preprocess


def _literal_preprocess(rgb: np.ndarray, spec: Preprocessing) -> np.ndarray:
    x = rgb.astype(np.float64).transpose(2, 0, 1) / 255.0 * spec.scale
    if spec.channel_order == "BGR":
        x = x[::-1]
    mean = np.asarray(spec.mean).reshape(3, 1, 1)
    std = np.asarray(spec.std).reshape(3, 1, 1)
    return ((x - mean) / std)[None]


@pytest.mark.parametrize("spec", [TORCHVISION_NONE, CAFFE_227], ids=["rgb", "caffe_bgr"])
def test_preprocess_normalisation_matches_literal(spec: Preprocessing) -> None:
    image = _random_rgb(227, 227)  # "exact" at 227 is the identity resize
    x = preprocess(image, spec, device="cpu")
    assert x.shape == (1, 3, 227, 227) and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), _literal_preprocess(image, spec), rtol=1e-5, atol=1e-5)


def test_exact_resize_is_pillow_bilinear_to_input_size() -> None:
    image = _random_rgb(50, 80)
    spec = Preprocessing(input_size=(20, 30))
    expected = np.asarray(Image.fromarray(image).resize((30, 20), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(resized_rgb(image, spec), expected)
    assert preprocess(image, spec).shape == (1, 3, 20, 30)


@pytest.mark.parametrize(
    ("hw", "resized_wh", "top_left"),
    [((300, 451), (384, 256), (16, 80)), ((451, 300), (256, 384), (80, 16))],
)
def test_shorter_side_then_centre_crop_geometry(
    hw: tuple[int, int], resized_wh: tuple[int, int], top_left: tuple[int, int]
) -> None:
    # hand values: 256 * 451 / 300 = 384.85 -> 384; crop offsets (256-224)/2, (384-224)/2
    image = _random_rgb(*hw)
    spec = Preprocessing(
        input_size=(224, 224), resize_rule="shorter_then_center_crop", resize_to=256
    )
    resized = np.asarray(Image.fromarray(image).resize(resized_wh, Image.Resampling.BILINEAR))
    top, left = top_left
    np.testing.assert_array_equal(
        resized_rgb(image, spec), resized[top : top + 224, left : left + 224]
    )


def test_preprocess_rejects_non_rgb_arrays() -> None:
    with pytest.raises(InputError, match="uint8"):
        preprocess(np.zeros((4, 4, 3), np.float32), TORCHVISION_NONE)
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        preprocess(np.zeros((4, 4), np.uint8), TORCHVISION_NONE)


def test_preprocess_batch_stacks_and_rejects_mixed_sizes() -> None:
    images = [_random_rgb(10, 12), _random_rgb(10, 12)]
    batch = preprocess_batch(images, TORCHVISION_NONE)
    assert batch.shape == (2, 3, 10, 12)
    torch.testing.assert_close(batch[1:], preprocess(images[1], TORCHVISION_NONE))
    with pytest.raises(InputError, match="different sizes"):
        preprocess_batch([_random_rgb(10, 12), _random_rgb(12, 10)], TORCHVISION_NONE)
    with pytest.raises(InputError):
        preprocess_batch([], TORCHVISION_NONE)


@pytest.mark.parametrize("spec", [TORCHVISION_NONE, CAFFE_227], ids=["rgb", "caffe_bgr"])
def test_deprocess_inverts_preprocess_exactly(spec: Preprocessing) -> None:
    image = _random_rgb(227, 227)
    x = preprocess(image, spec)
    np.testing.assert_array_equal(deprocess(x, spec), image)
    np.testing.assert_array_equal(deprocess(x[0], spec), image)
    with pytest.raises(InputError):
        deprocess(x[:, :2], spec)


def test_deprocess_clips_out_of_range_values() -> None:
    spec = Preprocessing(input_size=(1, 2))
    x = torch.tensor([[[2.0, -1.0]], [[0.5, 0.5]], [[0.0, 1.0]]])
    np.testing.assert_array_equal(deprocess(x, spec), [[[255, 128, 0], [0, 128, 255]]])


def test_caffe_demo_input_matches_caffe(shared_data: Path) -> None:
    """The old demo's network input (Caffe's blob) from its resized RGB image."""
    blobs = np.load(shared_data / "caffe" / "seed" / "forward_butterfly.npz")
    resized = np.round(blobs["resized_rgb"] * 255).astype(np.uint8)  # quantised to 8 bits
    x = preprocess(resized, CAFFE_227).numpy()
    # quantising to 8 bits moves a pixel by <= 0.5/255, i.e. <= 0.5 in Caffe's 0..255 units
    assert np.abs(x - blobs["data"]).max() <= 0.5 + 1e-3


def test_deprocess_matches_the_caffe_demo_display(shared_data: Path) -> None:
    """Caffe's Transformer.deprocess of the demo's min-max-scaled conv1 output."""
    seed = np.load(shared_data / "caffe" / "seed" / "seed_exact.npz")
    conv1 = seed["conv1"][0].astype(np.float64)
    scaled = (conv1 - conv1.min()) / (conv1.max() - conv1.min()) * 255  # the demo's step
    expected = np.clip(seed["display_rgb"].astype(np.float64) * 255, 0, 255)
    got = deprocess(torch.from_numpy(scaled), CAFFE_227).astype(np.float64)
    assert np.abs(got - expected).max() <= 0.5 + 1e-3  # rounding to integers only


# ---------------------------------------------------------------- bundled photo


def test_bundled_photos_are_the_shared_cc0_files_byte_for_byte(shared_data: Path) -> None:
    for name, shared in [("chelsea", "skimage_chelsea.png"), ("coffee", "skimage_coffee.png")]:
        path = bundled_photo(name)
        assert path.name == f"{name}.png"
        assert path.read_bytes() == (shared_data / "images" / shared).read_bytes()
        assert "CC0" in BUNDLED_PHOTOS[name]
    assert bundled_photo() == bundled_photo("chelsea")
    assert load_image(bundled_photo()).shape == (300, 451, 3)
    assert load_image(bundled_photo("coffee")).shape == (400, 600, 3)


def test_the_licence_note_beside_the_photos_names_each_one_and_cc0() -> None:
    note = (bundled_photo().parent / "README.md").read_text(encoding="utf-8")
    photographers = {"chelsea": "Stefan van der Walt", "coffee": "Rachel Michetti"}
    for name, photographer in photographers.items():
        assert f"`{name}.png`" in note and photographer in note
        assert photographer in BUNDLED_PHOTOS[name]
    assert "CC0" in note and "scikit-image" in note


def test_bundled_photo_works_with_scikit_image_unimportable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in [name for name in sys.modules if name.split(".")[0] == "skimage"]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "skimage", None)  # makes ``import skimage`` raise
    with pytest.raises(ImportError):
        importlib.import_module("skimage")
    for name in BUNDLED_PHOTOS:
        assert load_image(bundled_photo(name)).dtype == np.uint8


def test_bundled_photo_refuses_unknown_names_and_reports_a_broken_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=r"no bundled photo 'astronaut'.*chelsea.*coffee"):
        bundled_photo("astronaut")
    monkeypatch.setattr(images_module, "PHOTO_DIR", tmp_path)
    with pytest.raises(ImageError, match="reinstall"):
        bundled_photo()


# ---------------------------------------------------------------- truncated data, any decoder error


def _png_bytes(tmp_path: Path) -> bytes:
    Image.fromarray(_random_rgb(16, 16)).save(tmp_path / "whole.png")
    return (tmp_path / "whole.png").read_bytes()


def test_a_png_missing_its_last_crc_and_iend_is_refused(tmp_path: Path) -> None:
    """Pillow alone decodes this file without a word; the chunk walk refuses it."""
    data = _png_bytes(tmp_path)
    assert data.endswith(b"IEND\xaeB`\x82")
    path = tmp_path / "cut.png"
    path.write_bytes(data[:-16])  # the IDAT chunk's CRC and the whole IEND chunk gone
    with Image.open(path) as plain:
        plain.load()  # the oracle: Pillow accepts it
    with pytest.raises(ImageError, match="truncated PNG") as info:
        load_image(path)
    assert "\n" not in str(info.value)
    path.write_bytes(data[:-12])  # only IEND gone
    with pytest.raises(ImageError, match="truncated PNG"):
        load_image(path)


def test_a_png_with_a_flipped_byte_is_refused_by_its_crc(tmp_path: Path) -> None:
    data = bytearray(_png_bytes(tmp_path))
    data[-20] ^= 0x01  # inside the image data
    path = tmp_path / "flipped.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="CRC mismatch in chunk 'IDAT'"):
        load_image(path)


def test_data_after_iend_is_ignored(tmp_path: Path) -> None:
    """Trailing bytes after IEND are common (appended metadata) and outside the image."""
    data = _png_bytes(tmp_path)
    path = tmp_path / "trailing.png"
    path.write_bytes(data + b"appended")
    np.testing.assert_array_equal(load_image(path), np.asarray(Image.open(tmp_path / "whole.png")))


class _FailingImage:
    """Stands in for what Image.open returns; its load raises like a broken plugin."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.size = (4, 4)

    def __enter__(self) -> _FailingImage:
        return self

    def __exit__(self, *args: object) -> None:
        pass

    def load(self) -> None:
        raise self.error


class BLPFormatError(NotImplementedError):
    """Pillow's BLP plugin raises a NotImplementedError subclass of this name."""


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("Failed to decode image"),  # AVIF
        BLPFormatError("Unsupported BLP compression"),
        MemoryError(),  # JPEG 2000 under an address-space limit
        ZeroDivisionError("division by zero"),
    ],
    ids=["RuntimeError", "BLPFormatError", "MemoryError", "ZeroDivisionError"],
)
def test_any_exception_from_pillow_is_a_one_line_image_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    path = tmp_path / "odd.img"
    path.write_bytes(b"whatever")
    monkeypatch.setattr(images_module.Image, "open", lambda handle: _FailingImage(error))
    with pytest.raises(ImageError, match="cannot decode image") as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_pillow_file_objects_are_not_named_in_messages(tmp_path: Path) -> None:
    path = tmp_path / "junk.png"
    path.write_bytes(b"GIF8 not really")
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert "BytesIO" not in str(info.value) and str(path) in str(info.value)


def test_native_size_inputs_are_downscaled_to_the_side_limit() -> None:
    """Oracle: Pillow's bilinear resize to the rounded size, called here directly."""
    wide = _random_rgb(30, 2000)
    fitted, downscaled = images_module.fit_native_size(wide, TORCHVISION_NONE)
    side = images_module.MAX_NATIVE_SIDE
    size = (side, round(30 * side / 2000))
    expected = np.asarray(Image.fromarray(wide).resize(size, Image.Resampling.BILINEAR))
    assert downscaled and fitted.shape == (15, side, 3)
    np.testing.assert_array_equal(fitted, expected)
    small = _random_rgb(30, 40)
    assert images_module.fit_native_size(small, TORCHVISION_NONE)[0] is small
    assert not images_module.fit_native_size(wide, CAFFE_227)[1]  # "exact" resizes anyway


def test_image_suffixes_are_pillows_and_shared_by_folders_and_the_explorer(tmp_path: Path) -> None:
    """One list of image suffixes (Pillow's registered ones, any case) for datasets and the
    explorer's library."""
    from deconvnet.faces.explorer.session import Explorer
    from deconvnet.inputs.datasets import ImageFolder
    from deconvnet.inputs.images import image_suffixes, is_image_file
    from deconvnet.inputs.preprocessing import Preprocessing
    from tests import _nets

    assert {".png", ".jpg", ".webp", ".ppm", ".tif"} <= image_suffixes()
    assert is_image_file("a.JPG") and is_image_file(Path("b.PpM")) and not is_image_file("c.txt")
    for name in ("a.png", "b.PPM", "c.txt", "d.tiff"):
        Image.new("RGB", (8, 8)).save(tmp_path / name, format="PNG")
    folder = ImageFolder(tmp_path, Preprocessing((8, 8)))
    explorer = Explorer(_nets.small_conv(), Preprocessing((8, 8)), name="net", images_dir=tmp_path)
    assert list(folder.paths) == explorer.library() == ["a.png", "b.PPM", "d.tiff"]


@pytest.mark.parametrize("interpolation", ["bicubic", "nearest", "lanczos"])
def test_resizing_uses_the_specs_filter(interpolation: str) -> None:
    """Oracle: Pillow's own resize with that filter, then torchvision's centre crop."""
    pixels = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    spec = Preprocessing(
        (24, 24), "shorter_then_center_crop", resize_to=27, interpolation=interpolation
    )
    filter_ = Image.Resampling[interpolation.upper()]
    resized = np.asarray(Image.fromarray(pixels).resize((37, 27), filter_))  # 70 * 27 / 50
    top, left = round((27 - 24) / 2), round((37 - 24) / 2)
    expected = resized[top : top + 24, left : left + 24]
    np.testing.assert_array_equal(resized_rgb(pixels, spec), expected)
    bilinear = Preprocessing((24, 24), "shorter_then_center_crop", resize_to=27)
    assert not np.array_equal(resized_rgb(pixels, bilinear), expected)


def test_squash_resizes_both_sides_then_crops() -> None:
    """timm's crop_mode "squash": both sides to resize_to (aspect ratio lost), centre crop."""
    pixels = np.random.default_rng(4).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    spec = Preprocessing(
        (20, 20), "squash_then_center_crop", resize_to=22, interpolation="bicubic"
    )
    squashed = np.asarray(Image.fromarray(pixels).resize((22, 22), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(resized_rgb(pixels, spec), squashed[1:21, 1:21])
    with pytest.raises(ValueError, match="needs resize_to"):
        Preprocessing((20, 20), "squash_then_center_crop")
    with pytest.raises(ValueError, match="interpolation must be one of"):
        Preprocessing((20, 20), interpolation="random")  # type: ignore[arg-type]
