"""The fused AdaIN block and the shared-lateral decode compute the reference block's function."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from error_model import assert_close_float32, assert_close_float64, assert_within_rounding_error, network_reductions
from tsn.models import build_model, create_model, model_config
from tsn.models.fused import FusedAdaINConvBlock, adain_leaky_relu, fuse_adain_blocks, unfuse_adain_blocks
from tsn.models.layers import AdaINConvBlock, modulate
from tsn.models.tsn import _activation_dtype


def test_adain_leaky_relu_golden_values() -> None:
    """One channel with values 1, 3, 5, 7: mean 4, biased variance 5; scale 2, shift -1, slope 0.1."""
    x = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])
    out = adain_leaky_relu(x.clone(), torch.tensor([[2.0]]), torch.tensor([[-1.0]]), eps=0.0, negative_slope=0.1)
    z = [(v - 4.0) / math.sqrt(5.0) * 2.0 - 1.0 for v in (1.0, 3.0, 5.0, 7.0)]
    expected = torch.tensor([v if v > 0 else 0.1 * v for v in z]).view(1, 1, 2, 2)
    # Exact expected values; float32 mean and variance over 4 pixels (2 accumulations), then one modulation.
    assert_close_float32(out, expected, reduction=4, depth=3, sides=1)


def test_adain_leaky_relu_works_in_place_only_without_autograd() -> None:
    x = torch.randn(2, 3, 5, 5)
    scale, shift = torch.randn(2, 3), torch.randn(2, 3)
    with torch.inference_mode():
        inference = x.clone()
        out = adain_leaky_relu(inference, scale, shift)
    assert out.data_ptr() == inference.data_ptr()  # no new full-size tensor
    leaf = x.clone().requires_grad_()
    trained = adain_leaky_relu(leaf, scale, shift)
    assert trained.data_ptr() != leaf.data_ptr()
    torch.testing.assert_close(trained.detach(), out)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("groups", [1, 3])
def test_fused_block_matches_reference_block(channels_last: bool, groups: int) -> None:
    torch.manual_seed(0)
    block = AdaINConvBlock(3, 8, 16, latent_dim=10)
    x, style = torch.randn(2, 8, 12, 10), torch.randn(2 * groups, 10)
    if channels_last:
        block, x = block.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = block(x, style)
        fused_block = fuse_adain_blocks(block)
        assert isinstance(fused_block, FusedAdaINConvBlock) and type(block) is AdaINConvBlock  # a new module
        fused = fused_block(x, style)
    assert fused.shape == (2 * groups, 16, 12, 10)
    # conv + style linear + the instance norm's reduction over the 12 x 10 pixels (mean, variance)
    assert_close_float32(fused, reference, reduction=network_reductions(block) + [12 * 10] * 2)


def test_fused_block_gradients_match_reference_in_float64() -> None:
    torch.manual_seed(0)
    block = AdaINConvBlock(3, 4, 6, latent_dim=5).double()
    x, style = torch.randn(2, 4, 7, 9, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    grads = []
    for fuse in (False, True):
        block = (fuse_adain_blocks if fuse else unfuse_adain_blocks)(block)
        block.zero_grad()
        x_ = x.clone().requires_grad_()
        (block(x_, style) ** 2).sum().backward()
        grads.append([x_.grad] + [p.grad for p in block.parameters() if p.grad is not None])
    # The conv bias gets no gradient through instance norm: zero in the reference, absent in the fused block.
    assert block.conv.bias.grad is None
    reference, fused = grads
    # Backward reduces over the batch and the pixels too (weight gradients: N*H*W terms per entry).
    reductions = network_reductions(block) + [2 * 7 * 9] * 4
    assert_close_float64(fused[0], reference[0], reduction=reductions, what="input gradient")
    nonzero_reference = [g for g in reference[1:] if g.abs().max() > 1e-12]
    assert len(fused) - 1 == len(nonzero_reference)
    for got, want in zip(fused[1:], nonzero_reference, strict=True):
        assert_close_float64(got, want, reduction=reductions, what="parameter gradient")


@pytest.mark.parametrize("channels_last", [False, True])
def test_spatial_statistics_gradient_is_the_closed_form(channels_last: bool) -> None:
    """The eager training path's mean / variance (batch norm statistics kernel, hand-written backward) passes
    autograd's numerical gradient check in float64, in both memory formats, and equals ``var_mean``."""
    from tsn.models.fused import _SpatialStatistics

    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    assert torch.autograd.gradcheck(_SpatialStatistics.apply, (x,))
    mean, var = _SpatialStatistics.apply(x)
    want_var, want_mean = torch.var_mean(x, dim=(2, 3), correction=0)
    assert_close_float64(mean, want_mean, reduction=20)
    assert_close_float64(var, want_var, reduction=20, depth=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_upsampling_gradient_is_unchanged_by_the_channels_last_hook(dtype: torch.dtype) -> None:
    """upsample hands its backward a channels_last copy of a concatenation's gradient slice. That is exactly the
    backward run on a channels_last gradient (equal on any CPU), and the same maths as the backward on the slice
    itself: equal within rounding, whose order the two memory formats' kernels may choose differently (each input
    pixel of a 5 -> 10 align_corners upsampling sums at most 3 x 3 output pixels' contributions)."""
    from tsn.models.backbone import upsample

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 7, generator=generator, dtype=dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    lateral = torch.randn(2, 3, 10, 13, generator=generator, dtype=dtype).contiguous(memory_format=torch.channels_last)
    weights = torch.randn(2, 9, 10, 13, generator=generator, dtype=dtype)
    hooked = torch.autograd.grad((torch.cat([upsample(x, (10, 13)), lateral], 1) * weights).sum(), x)[0]
    plain = F.interpolate(x, size=(10, 13), mode="bilinear", align_corners=True)
    slice_gradient = weights[:, :6]  # what torch.cat's backward hands the upsampling: a channel slice
    channels_last = torch.autograd.grad(plain, x, slice_gradient.contiguous(memory_format=torch.channels_last))[0]
    assert torch.equal(hooked, channels_last)
    unhooked = torch.autograd.grad((torch.cat([plain, lateral], 1) * weights).sum(), x)[0]
    assert_within_rounding_error(hooked, unhooked, dtype=dtype, reduction=9)
    with torch.no_grad():  # nothing is registered where no gradient is recorded
        assert not upsample(x, (10, 13))._backward_hooks


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 6), h=st.integers(2, 9), w=st.integers(2, 9), groups=st.integers(1, 3),
       offset=st.floats(-20, 20), spread=st.floats(0.1, 10))
def test_fused_equals_reference_maths_for_any_shape(n, c, h, w, groups, offset, spread) -> None:
    torch.manual_seed(n * 100 + c * 10 + h)
    x = offset + spread * torch.randn(n, c, h, w, dtype=torch.float64)
    scale, shift = torch.randn(groups * n, c, dtype=torch.float64), torch.randn(groups * n, c, dtype=torch.float64)
    reference = torch.nn.functional.leaky_relu(modulate(torch.nn.functional.instance_norm(x), scale, shift), 0.01)
    with torch.no_grad():
        fused = adain_leaky_relu(x.clone(), scale, shift)
    # Folding the norm into b = shift - mean * a cancels terms of size |x| / std * |scale|: that is the magnitude.
    magnitude = float((x.abs().amax((2, 3)) / x.std((2, 3), unbiased=False).clamp_min(1e-300)).max()
                      * scale.abs().max() + shift.abs().max())
    assert_close_float64(fused, reference, reduction=h * w, depth=3, scale=max(magnitude, float(reference.abs().max())))


def test_shared_lateral_equals_repeated_features() -> None:
    """k modulations of one normalised map == the block run on k copies of the input."""
    torch.manual_seed(0)
    block = AdaINConvBlock(1, 6, 6, latent_dim=4)
    x, style = torch.randn(2, 6, 8, 8), torch.randn(6, 4)
    with torch.no_grad():
        shared = block(x, style)
        repeated = block(x.repeat(3, 1, 1, 1), style)
    assert_close_float32(shared, repeated, reduction=network_reductions(block) + [8 * 8] * 2)
    with pytest.raises(ValueError, match="need a multiple"):
        block(x, torch.randn(3, 4))


def _block_types(model: torch.nn.Module) -> list[type]:
    return [type(m) for m in model.modules() if isinstance(m, AdaINConvBlock)]


def test_fusing_replaces_blocks_through_their_parents_and_keeps_the_state_dict() -> None:
    model = create_model("tsn_r18_synthetic")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parameters = {name: p for name, p in model.named_parameters()}
    assert fuse_adain_blocks(model) is model
    assert _block_types(model) == [FusedAdaINConvBlock] * (5 + 4 + 1)  # laterals, fusion blocks, final block
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert all(p is parameters[name] for name, p in model.named_parameters())  # shared, not copied
    assert unfuse_adain_blocks(model) is model and _block_types(model) == [AdaINConvBlock] * 10
    assert list(model.state_dict()) == list(before)


def test_fusing_leaves_classes_alone_and_skips_batch_norm_blocks() -> None:
    """No module changes its class: the blocks an outside reference holds stay reference blocks."""
    model = create_model("tsn_r18_synthetic").eval()
    final = model.decoder.final
    fuse_adain_blocks(model)
    assert type(final) is AdaINConvBlock and type(model.decoder.final) is FusedAdaINConvBlock
    assert model.decoder.final.conv is final.conv and not model.decoder.final.training
    batch_norm = build_model(model_config("tsn_r18_synthetic", norm="batch"))
    assert fuse_adain_blocks(batch_norm) is batch_norm and FusedAdaINConvBlock not in _block_types(batch_norm)


def test_fast_model_matches_the_authors_way_on_every_task() -> None:
    """channels_last + fused blocks on the all-task path vs the whole network once per task (float32)."""
    torch.manual_seed(0)
    model = create_model("tsn_r18_pascal").eval()
    image = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        per_task = model.forward_per_task(image)
        fast_model = fuse_adain_blocks(model.to(memory_format=torch.channels_last))
        fast = fast_model(image.contiguous(memory_format=torch.channels_last))
    for task, reference in per_task.items():
        assert_close_float32(fast[task], reference, reduction=network_reductions(model), what=task)


def test_decoding_in_several_calls_changes_nothing() -> None:
    """The memory budget of predict_tasks (decode_bytes) splits the tasks over calls without changing outputs."""
    torch.manual_seed(0)
    model = create_model("tsn_r18_pascal").eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        together = model(image)
        features = model.encoder(image)
        model.decode_bytes = 2 * model.decoder_bytes_per_task(features, (64, 64), torch.float32)
        assert model.tasks_per_call(features, (64, 64), 1, torch.float32) == 2  # equal groups of 5: 1 per call
        apart = model(image)
        fast = fuse_adain_blocks(model.to(memory_format=torch.channels_last))
        fast_apart = fast(image.contiguous(memory_format=torch.channels_last))
    assert list(apart) == list(together)
    for task in together:
        assert_close_float32(apart[task], together[task], reduction=network_reductions(model), what=task)
        assert_close_float32(fast_apart[task], together[task], reduction=network_reductions(model), what=task)


def test_byte_budget_streaming_equals_one_call_in_float64() -> None:
    """One task per call (the default budget at 512 px) vs every task in one call: the same maths, float64."""
    torch.manual_seed(0)
    model = create_model("tsn_r18_pascal").double().eval()
    image = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        model.decode_bytes = 2**62
        together = model(image)
        model.decode_bytes = 0  # below any task: one per call
        apart = model(image)
    for task in together:
        assert_close_float64(apart[task], together[task], reduction=network_reductions(model), what=task)


def test_the_budget_knows_the_dtype_and_the_default_streams_large_images() -> None:
    """Bytes per task follow the element size (autocast's dtype included); float64 at 512 x 512, batch 2 (which
    exhausted 23 GB in one call) decodes one task per call within the default budget."""
    with torch.device("meta"):
        model = create_model("tsn_r18_pascal")
        features = model.encoder(torch.empty(1, 3, 512, 512))
        small = model.encoder(torch.empty(1, 3, 64, 64))
    size = (512, 512)
    single = model.decoder_bytes_per_task(features, size, torch.float32)
    assert model.decoder_bytes_per_task(features, size, torch.float64) == 2 * single
    assert model.decoder_bytes_per_task(features, size, torch.bfloat16) == single // 2
    assert model.tasks_per_call(features, size, 2, torch.float64) == 1
    assert model.tasks_per_call(features, size, 1, torch.float32) == 1
    assert model.tasks_per_call(small, (64, 64), 1, torch.float32) >= len(model.tasks)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _activation_dtype(torch.empty(1)) == torch.bfloat16
    assert _activation_dtype(torch.empty(1, dtype=torch.float64)) == torch.float64
