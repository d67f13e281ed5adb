"""The inference pipeline (:mod:`tsn.inference.pipeline`): every image form, both fits, the prediction budget and
the saved form as bytes or files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import tsn
from tsn.errors import TsnError
from tsn.inference.pipeline import (
    PREDICTION_BUDGET,
    PadToMultiple,
    PadToSize,
    Pipeline,
    PixelBudget,
    Resize,
    make_fit,
    read_image,
    save_prediction,
    saved_files,
)

SIZE = 64

pytestmark = pytest.mark.usefixtures("one_thread_private_cache")


@pytest.fixture(scope="module")
def model() -> tsn.models.DensePredictionModel:
    torch.manual_seed(0)
    return tsn.create_model("tsn_r10t_synthetic", decoder_channels=(16, 16, 8, 8, 8)).eval()


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _same(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> None:
    assert list(first) == list(second)
    for task in first:
        np.testing.assert_array_equal(first[task], second[task], err_msg=task)


@pytest.mark.parametrize("form", ["bytes", "bytearray", "memoryview", "BytesIO", "open file", "path"])
def test_encoded_images_in_memory_give_what_the_file_gives(model, picture, tmp_path: Path, form: str) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(_png(picture))
    payload = path.read_bytes()
    pipeline = Pipeline(model, fit=Resize((SIZE, SIZE)))
    if form == "open file":
        with path.open("rb") as handle:
            got = pipeline.predict(handle)
    else:
        image = {"bytes": payload, "bytearray": bytearray(payload), "memoryview": memoryview(payload),
                 "BytesIO": io.BytesIO(payload), "path": path}[form]
        got = pipeline.predict(image)
    _same(got, pipeline.predict(picture))
    _same(got, tsn.predict(model, payload, size=SIZE))


def test_sixteen_bit_bytes_decode_like_the_file(tmp_path: Path) -> None:
    import cv2

    deep = (np.random.default_rng(4).random((9, 7, 3)) * 65535).astype(np.uint16)
    ok, encoded = cv2.imencode(".png", deep)
    assert ok
    (tmp_path / "deep.png").write_bytes(encoded.tobytes())
    from_file, size = read_image(tmp_path / "deep.png")
    from_bytes, same_size = read_image(encoded.tobytes())
    assert size == same_size == (9, 7)
    np.testing.assert_array_equal(from_file, from_bytes)


@pytest.mark.parametrize(
    ("image", "name", "message"),
    [
        (b"not an image at all", "upload.png", "upload.png: not an image"),
        (b"", None, "the image bytes: not an image"),
        (io.StringIO("text"), None, "opened in text mode"),
        (_png(np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8))[:150], "cut.png",
         "cut.png: unreadable image"),
    ],
    ids=["garbage", "empty", "text-file", "truncated"],
)
def test_bad_encoded_images_are_one_line_errors_naming_them(image, name, message) -> None:
    with pytest.raises(TsnError) as caught:
        read_image(image, name=name)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_pad_fit_runs_the_image_at_its_own_size(model) -> None:
    """A 64 x 64 image needs no padding: the prediction is the model's own output at that size."""
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    from tsn.data.transforms import build_transforms

    tensor = build_transforms("eval", (64, 64), tasks=(), seed=0)({"image": image})["image"][None]
    with torch.inference_mode():
        raw = model(tensor, None)
    got = Pipeline(model, fit=PadToMultiple()).predict(image)
    for task, prediction in got.items():
        spec = model.task_specs[task]
        np.testing.assert_array_equal(prediction, spec.postprocess(raw[task])[0].numpy(), err_msg=task)


@pytest.mark.parametrize(("height", "width", "multiple"), [(1, 1, 1), (1, 70, 1), (33, 65, 32), (64, 64, 7)])
def test_pad_fit_pads_to_the_minimum_and_the_multiple_and_crops_back(model, height, width, multiple) -> None:
    image = np.random.default_rng(2).integers(0, 256, (height, width, 3), dtype=np.uint8)
    pipeline = Pipeline(model, fit=PadToMultiple(multiple))
    item = pipeline.prepare(image)
    padded = item.tensor.shape[-2:]
    for side, real in zip(padded, (height, width), strict=True):
        assert side % multiple == 0 and side >= max(64, real)
    assert item.crop == (height, width) and item.size == (height, width)
    for task, prediction in pipeline.predict(image).items():
        assert prediction.shape[-2:] == (height, width), task


def test_pad_fit_reduces_an_image_over_its_largest_side(model) -> None:
    image = np.zeros((30, 300, 3), np.uint8)
    item = Pipeline(model, fit=PadToMultiple(1, max_side=100)).prepare(image)
    assert item.crop == (10, 100) and item.size == (10, 100) and item.original_size == (30, 300)


def _invpt_pad_image(normalised: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What InvPT's test-time ``PadImage`` does to the normalised ``H x W x 3`` image (written from its behaviour:
    a float32 array of ``size`` filled with 0, the image at ``delta // 2`` rows and columns), channels first."""
    height, width = normalised.shape[:2]
    padded = np.zeros((size[0], size[1], 3), np.float32)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    padded[top : top + height, left : left + width] = normalised
    return padded.transpose(2, 0, 1)


@pytest.mark.parametrize(("height", "width"), [(64, 64), (41, 56), (33, 63), (1, 1), (64, 9)])
def test_pad_to_size_centres_the_image_as_invpt_and_crops_back_exactly(model, height, width) -> None:
    """The network input is InvPT's padded image bit for bit (an odd difference leaves the extra row at the bottom
    and the extra column at the right), and every prediction is the model's output on it, cropped."""
    from tsn.data.transforms import build_transforms

    image = np.random.default_rng(5).integers(0, 256, (height, width, 3), dtype=np.uint8)
    pipeline = Pipeline(model, fit=PadToSize((64, 64)), budget=None)
    item = pipeline.prepare(image)
    normalised = build_transforms("eval", (height, width), tasks=(), seed=0)({"image": image})["image"]
    expected = _invpt_pad_image(normalised.numpy().transpose(1, 2, 0), (64, 64))
    assert torch.equal(item.tensor, torch.from_numpy(expected))
    top, left = (64 - height) // 2, (64 - width) // 2
    assert item.offset == (top, left) and item.crop == (height, width) and item.size == (height, width)
    with torch.inference_mode():
        raw = model(item.tensor[None], None)
    got = pipeline.predict(image)
    for task, prediction in got.items():
        spec = model.task_specs[task]
        cropped = spec.postprocess(raw[task][..., top : top + height, left : left + width])[0]
        assert torch.equal(torch.from_numpy(prediction), cropped), task


def test_pad_to_size_at_the_top_left_and_its_fit_name(model) -> None:
    image = np.random.default_rng(6).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    item = Pipeline(model, fit=PadToSize((64, 64), centred=False)).prepare(image)
    assert item.offset == (0, 0) and item.crop == (30, 50)
    assert make_fit("pad-to-size", size="448x576") == PadToSize((448, 576))
    with pytest.raises(TsnError, match="must be at least 64 x 64"):
        Pipeline(model, fit=PadToSize((32, 64)))


@pytest.mark.parametrize("shape", [(65, 64), (64, 65), (200, 300)])
def test_pad_to_size_refuses_a_larger_image_in_one_line(model, shape, tmp_path: Path) -> None:
    """InvPT's PadImage leaves a larger side unpadded and its network, built for the fixed size, then fails: no
    number of theirs exists for such an image, so it is refused (from an array and from a file alike)."""
    image = np.zeros((*shape, 3), np.uint8)
    pipeline = Pipeline(model, fit=PadToSize((64, 64)))
    (tmp_path / "big.png").write_bytes(_png(image))
    for given, name in ((image, "the image"), (tmp_path / "big.png", "big.png")):
        with pytest.raises(TsnError) as caught:
            pipeline.predict(given, name=str(given) if isinstance(given, Path) else None)
        message = str(caught.value)
        assert "\n" not in message and f"{shape[0]}x{shape[1]}, larger than the fixed network input 64x64" in message
        assert name in message


@pytest.mark.parametrize(
    ("size", "pixels", "side", "expected"),
    [
        ((100, 75), 10_000, 1000, (100, 75)),
        ((1000, 1000), 10_000, 1000, (100, 100)),
        ((1, 5000), 10_000, 1000, (1, 1000)),
        ((40_000_000, 1), 2**21, 4096, (4096, 1)),
        ((3000, 4000), 2**21, 4096, (1254, 1672)),
    ],
)
def test_pixel_budget_keeps_the_aspect_within_both_bounds(size, pixels, side, expected) -> None:
    budget = PixelBudget(pixels, side)
    fitted = budget.fit(size)
    assert fitted == expected
    assert fitted[0] * fitted[1] <= max(pixels, 1) and max(fitted) <= side
    assert budget.shrink(np.zeros((*fitted, 3), np.uint8)).shape[:2] == fitted  # within: unchanged


def test_predictions_over_the_budget_are_made_at_the_budget_size(model, monkeypatch) -> None:
    image = np.random.default_rng(3).integers(0, 256, (60, 240, 3), dtype=np.uint8)
    got = Pipeline(model, fit=Resize((SIZE, SIZE)), budget=PixelBudget(900, 120)).predict(image)
    for task, prediction in got.items():
        assert prediction.shape[-2:] == (15, 60), task
    assert PREDICTION_BUDGET.fit((4000, 3000)) == (4000, 3000)  # an ordinary camera picture: its own size


@pytest.mark.parametrize("save_format", ["authors", "visual"])
def test_saved_bytes_are_the_saved_files(model, picture, tmp_path: Path, save_format: str) -> None:
    pipeline = Pipeline(model, fit=Resize((SIZE, SIZE)))
    for task, prediction in pipeline.predict(picture).items():
        spec = model.task_specs[task]
        files = saved_files(spec, prediction, save_format)  # type: ignore[arg-type]
        assert spec.saved_suffix in files
        save_prediction(spec, prediction, tmp_path / task, "photo", save_format)  # type: ignore[arg-type]
        assert sorted(p.name for p in (tmp_path / task).iterdir()) == sorted(f"photo{s}" for s in files)
        for suffix, payload in files.items():
            if suffix == ".mat":  # the header holds a time stamp: compare the arrays
                stored = scipy.io.loadmat(io.BytesIO(payload))[spec.name]
                np.testing.assert_array_equal(stored, scipy.io.loadmat(tmp_path / task / "photo.mat")[spec.name])
                np.testing.assert_array_equal(stored, spec.to_saved(prediction))
            else:
                assert (tmp_path / task / f"photo{suffix}").read_bytes() == payload


def test_fits_by_name_and_their_refusals(model) -> None:
    assert make_fit("resize", size="48x80") == Resize((48, 80))
    assert make_fit("pad", multiple=32) == PadToMultiple(32)
    with pytest.raises(TsnError, match="unknown input fit 'crop'; choose one of: resize, pad"):
        make_fit("crop")
    with pytest.raises(TsnError, match="pad multiple must be a whole number"):
        Pipeline(model, fit=PadToMultiple(0))
    with pytest.raises(TsnError, match="--size must be at least 64 x 64 for this model"):
        Pipeline(model, fit=Resize((32, 64)))
