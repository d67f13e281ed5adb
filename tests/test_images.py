"""The one image reader (:mod:`tsn.data.images`): every Pillow mode, 16-bit data by its full range, EXIF
orientation, reduced decoding of large images, and one-line errors for bad files."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from tsn.data.images import decode_image, default_max_pixels, read_rgb_image
from tsn.errors import TsnError
from tsn.inference.predict import predict_files
from tsn.models import build_model, model_config

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 17, 3), dtype=np.uint8)
RAMP16 = (np.arange(12 * 17, dtype=np.int64) * 65535 // (12 * 17 - 1)).astype(np.uint16).reshape(12, 17)
"""A 16-bit grey ramp over the whole 0..65535 range (0 and 65535 included)."""


def ramp_as_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit values on the 8-bit scale, rounded: v * 255 / 65535 = v / 257."""
    return np.rint(values.astype(np.float64) / 257.0).astype(np.uint8)


def save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


# ------------------------------------------------------------------------------------------------ modes


@pytest.mark.parametrize("mode, suffix", [("RGB", ".png"), ("L", ".png"), ("1", ".png"), ("P", ".png"),
                                          ("CMYK", ".tif"), ("YCbCr", ".tif"), ("LAB", ".tif")])
def test_eight_bit_modes_convert_as_pillow_does(tmp_path: Path, mode: str, suffix: str) -> None:
    source = Image.fromarray(RGB).convert(mode)
    path = save(source, tmp_path / f"x{suffix}")
    assert Image.open(path).mode == mode  # the file really holds that mode
    pixels = read_rgb_image(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (12, 17, 3)
    np.testing.assert_array_equal(pixels, np.asarray(Image.open(path).convert("RGB")))


def test_alpha_is_composited_onto_white(tmp_path: Path) -> None:
    alpha = RNG.integers(0, 256, (12, 17), dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    rgba = np.dstack([RGB, alpha])
    expected = np.rint((RGB * (alpha[..., None] / 255.0)) + 255.0 * (1 - alpha[..., None] / 255.0))
    got = read_rgb_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"))
    np.testing.assert_array_equal(got, expected.astype(np.uint8))
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == RGB[0, 1].tolist()
    la = read_rgb_image(save(Image.fromarray(np.dstack([RGB[..., 0], alpha]), "LA"), tmp_path / "la.png"))
    np.testing.assert_array_equal(la[..., 0], expected[..., 0].astype(np.uint8))


def test_palette_transparency_is_white(tmp_path: Path) -> None:
    palette = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    index = np.asarray(palette)
    palette.info["transparency"] = int(index[0, 0])
    path = save(palette, tmp_path / "p.png", transparency=int(index[0, 0]))
    got = read_rgb_image(path)
    assert (got[index == index[0, 0]] == 255).all()
    opaque = np.asarray(Image.open(path).convert("RGB"))[index != index[0, 0]]
    np.testing.assert_array_equal(got[index != index[0, 0]], opaque)


@pytest.mark.parametrize("mode, suffix", [("I;16", ".png"), ("I;16B", ".tif"), ("I;16", ".tif")])
def test_sixteen_bit_grey_uses_the_full_range(tmp_path: Path, mode: str, suffix: str) -> None:
    dtype = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, (17, 12), RAMP16.astype(dtype).tobytes())
    path = save(image, tmp_path / f"g{suffix}")
    assert Image.open(path).mode == mode
    as_uint8 = read_rgb_image(path)
    np.testing.assert_array_equal(as_uint8, np.repeat(ramp_as_uint8(RAMP16)[..., None], 3, axis=-1))
    assert (as_uint8 == 255).mean() < 0.01  # not clipped to white
    as_float = read_rgb_image(path, dtype="float32")
    np.testing.assert_allclose(as_float[..., 1], RAMP16 / 65535.0, rtol=0, atol=2**-24)


def test_sixteen_bit_colour_png_is_read_at_full_depth(tmp_path: Path) -> None:
    """Pillow would truncate these to 8 bits; OpenCV reads every bit (written BGR, read back RGB)."""
    rgb16 = np.dstack([RAMP16, RAMP16[::-1], np.full_like(RAMP16, 1000)])
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[..., ::-1].copy())
    got = read_rgb_image(tmp_path / "rgb16.png", dtype="float32")
    np.testing.assert_allclose(got, rgb16 / 65535.0, rtol=0, atol=2**-24)
    np.testing.assert_array_equal(read_rgb_image(tmp_path / "rgb16.png"), ramp_as_uint8(rgb16))
    alpha = np.full_like(RAMP16, 32768)
    cv2.imwrite(str(tmp_path / "rgba16.png"), np.dstack([rgb16[..., ::-1], alpha]))
    composited = read_rgb_image(tmp_path / "rgba16.png", dtype="float32")
    a = 32768 / 65535.0
    np.testing.assert_allclose(composited, rgb16 / 65535.0 * a + (1 - a), rtol=0, atol=1e-6)


def test_int32_and_float_images_follow_the_documented_scaling(tmp_path: Path) -> None:
    sixteen = Image.fromarray(RAMP16.astype(np.int32))  # mode I, values within 0..65535: a 16-bit image
    np.testing.assert_allclose(read_rgb_image(save(sixteen, tmp_path / "i16.tif"), dtype="float32")[..., 0],
                               RAMP16 / 65535.0, rtol=0, atol=2**-24)
    signed = np.arange(12 * 17, dtype=np.int32).reshape(12, 17) - 100  # outside 0..65535: min-max
    got = read_rgb_image(save(Image.fromarray(signed), tmp_path / "i.tif"), dtype="float32")[..., 2]
    np.testing.assert_allclose(got, (signed + 100) / (12 * 17 - 1), rtol=0, atol=1e-6)
    unit = np.linspace(0.1, 0.9, 12 * 17, dtype=np.float32).reshape(12, 17)  # within 0..1: as is
    got = read_rgb_image(save(Image.fromarray(unit), tmp_path / "unit.tif"), dtype="float32")[..., 0]
    np.testing.assert_array_equal(got, unit)
    wide = unit * 1000 - 50  # outside 0..1: min-max
    got = read_rgb_image(save(Image.fromarray(wide), tmp_path / "wide.tif"), dtype="float32")[..., 0]
    np.testing.assert_allclose(got, (wide - wide.min()) / (wide.max() - wide.min()), rtol=0, atol=1e-6)


def test_multi_frame_images_give_the_first_frame(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((8, 9, 3), value, np.uint8)) for value in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    for name in ("anim.gif", "pages.tif"):
        assert (read_rgb_image(tmp_path / name) == 10).all(), name


# ------------------------------------------------------------------------------------------------ orientation


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(Image.fromarray(RGB), tmp_path / "o.png", exif=exif)
    decoded = decode_image(path)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert decoded.size == expected.shape[:2]


def test_exif_orientation_of_a_16_bit_colour_png(tmp_path: Path) -> None:
    """The OpenCV path applies the orientation of an eXIf chunk (inserted before the pixels) as well."""
    import struct
    import zlib

    rgb16 = np.dstack([RAMP16, RAMP16[::-1], np.full_like(RAMP16, 1000)])
    _, encoded = cv2.imencode(".png", rgb16[..., ::-1].copy())
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    payload = exif.tobytes()
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    data = encoded.tobytes()
    header_end = 8 + 4 + 4 + 13 + 4  # signature, then the IHDR chunk (length, type, 13 bytes, CRC)
    (tmp_path / "turned.png").write_bytes(data[:header_end] + chunk + data[header_end:])
    decoded = decode_image(tmp_path / "turned.png", dtype="float32")
    assert decoded.size == (17, 12)
    np.testing.assert_allclose(decoded.pixels, np.rot90(rgb16 / 65535.0, -1), rtol=0, atol=2**-24)


# ------------------------------------------------------------------------------------------------ bad files


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    good = save(Image.fromarray(RGB), tmp_path / "good.png")
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    for name, reason in [("truncated.png", "corrupt or truncated"), ("notes.txt", "not an image"),
                         ("empty.jpg", "not an image"), ("folder.png", "is a folder"), ("missing.png", "no such")]:
        with pytest.raises(TsnError) as caught:
            read_rgb_image(tmp_path / name)
        message = str(caught.value)
        assert "\n" not in message and name in message and reason in message, message


def test_decompression_bombs_are_refused_without_touching_pillows_limit(tmp_path: Path, monkeypatch) -> None:
    path = save(Image.fromarray(RGB), tmp_path / "x.png")
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(TsnError, match=r"12 x 17|17 x 12"):
        read_rgb_image(path, max_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == before and default_max_pixels() == 2 * before
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # a program's own stricter setting is honoured
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and Pillow's warning does not leak out
        with pytest.raises(TsnError, match="exceeds limit of 100 pixels"):
            read_rgb_image(path)


# ------------------------------------------------------------------------------------------------ large images


def _peak_rss_growth(action) -> int:
    """Bytes the peak resident size grew by during ``action`` (Linux: the peak is reset through clear_refs)."""
    def status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident size")
    start = status("VmRSS:")
    action()
    return status("VmHWM:") - start


@pytest.fixture(scope="module")
def large_images(tmp_path_factory) -> dict[str, Path]:
    """4000 x 3000 smooth pictures (fast to write), as JPEG and PNG."""
    folder = tmp_path_factory.mktemp("large")
    y, x = np.mgrid[0:3000, 0:4000]
    picture = np.dstack([x * 255 // 3999, y * 255 // 2999, np.full_like(x, 90)]).astype(np.uint8)
    cv2.imwrite(str(folder / "large.jpg"), picture[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(folder / "large.png"), picture[..., ::-1].copy(), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return {"jpg": folder / "large.jpg", "png": folder / "large.png", "picture": picture}


@pytest.mark.parametrize("kind", ["jpg", "png"])
def test_large_images_are_decoded_reduced(large_images, kind: str) -> None:
    full_bytes = 4000 * 3000 * 3
    decoded = []
    growth = _peak_rss_growth(lambda: decoded.append(decode_image(large_images[kind], target_size=(64, 96))))
    (image,) = decoded
    assert image.size == (3000, 4000)
    height, width = image.pixels.shape[:2]
    assert 128 <= height < 256 and 192 <= width < 384 and abs(width / height - 4 / 3) < 0.02  # >= 2x the target
    # JPEG: DCT-domain scaling, never the full picture; PNG: one decode at native depth (Pillow holds RGB in
    # 4 bytes a pixel), no float or RGB copies of the full picture.
    assert growth < (0.5 if kind == "jpg" else 1.7) * full_bytes, f"peak grew by {growth / 1e6:.0f} MB"
    expected = cv2.resize(large_images["picture"], (width, height), interpolation=cv2.INTER_AREA)
    assert np.abs(image.pixels.astype(int) - expected).mean() < 2.0  # the same picture, box-reduced


def test_images_up_to_twice_the_target_are_decoded_as_they_are(large_images) -> None:
    image = decode_image(large_images["png"], target_size=(1500, 2000))
    assert image.pixels.shape == (3000, 4000, 3)
    np.testing.assert_array_equal(image.pixels, large_images["picture"])


# ------------------------------------------------------------------------------------------------ predict


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_config("tsn_r18_synthetic", decoder_channels=(16, 16, 8, 8, 8))).eval()


def _predicted(model, path: Path, out: Path) -> dict[str, np.ndarray]:
    summary = predict_files(model, [path], out, size=(64, 64), panels=False, progress=False, tasks=["semseg", "edges"],
                            save_format="authors")
    assert summary.processed == [path]
    return {task: np.asarray(Image.open(out / task / f"{path.stem}.png")) for task in ("semseg", "edges")}


def test_predict_on_a_16_bit_png_equals_its_8_bit_version(tmp_path: Path, model) -> None:
    rgb8 = RNG.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    # 16-bit values that round to the 8-bit ones (v8 * 257 plus up to +-128): the 16-bit file is the same picture.
    rgb16 = (rgb8.astype(np.int64) * 257 + RNG.integers(-128, 129, rgb8.shape)).clip(0, 65535).astype(np.uint16)
    Image.fromarray(rgb8).save(tmp_path / "eight.png")
    cv2.imwrite(str(tmp_path / "sixteen.png"), rgb16[..., ::-1].copy())
    np.testing.assert_array_equal(read_rgb_image(tmp_path / "sixteen.png"), rgb8)
    eight = _predicted(model, tmp_path / "eight.png", tmp_path / "out8")
    sixteen = _predicted(model, tmp_path / "sixteen.png", tmp_path / "out16")
    for task in eight:
        np.testing.assert_array_equal(sixteen[task], eight[task], err_msg=task)


def test_predict_saves_a_reduced_decode_at_the_original_size(tmp_path: Path, model) -> None:
    path = tmp_path / "wide.png"
    Image.fromarray(RNG.integers(0, 256, (300, 520, 3), dtype=np.uint8)).save(path)
    assert decode_image(path, target_size=(64, 64)).pixels.shape[:2] == (150, 260)
    predicted = _predicted(model, path, tmp_path / "out")
    assert predicted["semseg"].shape == (300, 520) and predicted["edges"].shape == (300, 520)
