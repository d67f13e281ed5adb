"""Training through ``torch.compile`` (config ``compile: true``): the compiled step computes the eager step's loss and
gradients (fused AdaIN blocks included), checkpoints keep the uncompiled keys, and an interrupted compiled run
resumes to the uninterrupted one's weights.

Compilation is the cost here: a cold Inductor compilation of the tiny model's forward and backward takes 80 s on
the 2-core Xeon (load 1.3; 7 min under load 6; 8-16 s with Inductor's on-disk cache warm), so one test compiles
with Inductor and the trainer's test captures the same graphs but runs them eagerly (``aot_eager``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_runs import tiny_run
from torch import nn

from error_model import assert_close_float64, network_reductions
from tsn.errors import TsnError
from tsn.models import DensePredictionModel, build_model
from tsn.models.checkpoint import read_checkpoint
from tsn.models.fused import fuse_adain_blocks
from tsn.training import load_config, train
from tsn.training.losses import loss_weights, multitask_loss
from tsn.training.trainer import _check_compiler

pytestmark = pytest.mark.usefixtures("one_thread", "synthetic_cache")

TINY: dict[str, Any] = tiny_run({
    "name": "tiny-compiled",
    "model.backbone": "resnet10t",
    "data.train_options": {"length": 8},
    "data.val_options": {"length": 2},
    "epochs": 1,
    "max_steps": 4,
    "batch_size": 2,
    "scheduler": {"name": "constant"},
    "validation": {"metrics": False},
    "checkpoint_every": 0,
    "log_every": 10,
    "seed": 5,
    "tensorboard": False,
    "compile": True,
})


def _gradient_reductions(model: nn.Module, run: Any) -> list[int]:
    """The reduction lengths of one forward and backward pass through every conv and linear layer.

    Forward: ``k*k*C_in/groups`` (or ``in_features``) per output element. Backward, per layer: the input gradient
    reduces over ``k*k*C_out/groups`` (``out_features``), the weight gradient over the output's pixels and samples
    (``N*H*W``, or the rows of a linear layer). The errors of all of them add in quadrature as in the error model.
    """
    lengths = list(network_reductions(model))
    handles = []

    def record(layer: nn.Module, _: Any, output: torch.Tensor) -> None:
        if isinstance(layer, nn.modules.conv._ConvNd):
            lengths.append(layer.out_channels // layer.groups * math.prod(layer.kernel_size))
            lengths.append(output.shape[0] * math.prod(output.shape[2:]))
        else:
            lengths.append(layer.out_features)
            lengths.append(output.numel() // output.shape[-1])

    for layer in model.modules():
        if isinstance(layer, (nn.modules.conv._ConvNd, nn.Linear)):
            handles.append(layer.register_forward_hook(record))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return lengths


def _loss_and_gradients(net: nn.Module, model: DensePredictionModel, image: torch.Tensor,
                        labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    specs = model.task_specs
    loss, _ = multitask_loss(net(image, list(specs)), labels, specs, loss_weights(specs))
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _tiny_batch(dtype: torch.dtype) -> tuple[DensePredictionModel, torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = build_model(load_config(TINY).model).train().to(dtype)
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, 64, 64, generator=generator).to(dtype)
    labels = {name: spec.kind.random_label(spec.channels, 2, 64, generator) for name, spec in model.task_specs.items()}
    return model, image, {name: x.to(dtype) if x.is_floating_point() else x for name, x in labels.items()}


@pytest.mark.slow  # one cold Inductor compilation: ~80 s on 2 cores
def test_a_compiled_step_with_fused_blocks_computes_the_eager_loss_and_gradients_exactly() -> None:
    """Float64 proves the compiled maths (Inductor's kernels, the fused blocks' backward) is the eager maths.

    Float32 is not compared gradient by gradient: the backward passes of batch and instance norm subtract means
    (``g - mean(g) - x_hat * mean(g * x_hat)``), and over the 2 x 2 maps of this tiny model's coarsest level that
    cancellation amplifies rounding far beyond the error model's forward bound (measured: 1.5e-3 of the largest
    gradient between two float32 kernels, while float64 agrees to 2e-13; the float32 losses were identical).
    The float32 compiled step itself is what the run below trains with.
    An error passed back through the network is relative to the largest gradient it flows from, so the scale is
    the largest gradient of the model, and the reduction lengths are those of the forward and backward passes.
    """
    model, image, labels = _tiny_batch(torch.float64)
    reductions = _gradient_reductions(model, lambda: _loss_and_gradients(model, model, image, labels))
    eager_loss, eager = _loss_and_gradients(model, model, image, labels)  # the reference blocks, eager
    fused = fuse_adain_blocks(model)  # the same parameters, computed by the fused blocks
    compiled_loss, compiled = _loss_and_gradients(torch.compile(fused), fused, image, labels)

    # The fused blocks leave out the decoder convolutions' biases, which instance norm removes exactly: their eager
    # gradient is zero up to rounding; every other parameter has a gradient both ways.
    biases = eager.keys() - compiled.keys()
    assert compiled.keys() <= eager.keys() and len(eager) == len(list(model.parameters()))
    assert biases and all(name.startswith("decoder.") and name.endswith("conv.bias") for name in biases)
    scale = max(float(g.abs().max()) for g in eager.values())
    for name in biases:
        assert_close_float64(eager[name], torch.zeros_like(eager[name]), reduction=reductions, scale=scale,
                             sides=1, what=f"eager gradient of {name}")
    # The loss is a mean over the pixels of each task's output: one more reduction of length N*H*W.
    assert_close_float64(compiled_loss, eager_loss, reduction=[*reductions, 2 * 64 * 64], what="loss")
    for name, gradient in compiled.items():
        assert_close_float64(gradient, eager[name], reduction=reductions, scale=scale, what=f"gradient of {name}")


def test_a_compiled_run_saves_plain_keys_and_resumes_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer's use of ``torch.compile``: Dynamo's graph capture and AOTAutograd's joint graph, as in a real
    run, but run by the ``aot_eager`` backend instead of Inductor's C++ kernels (whose maths the test above proves;
    a cold Inductor compilation of even this model takes over a minute)."""
    compiled: list[Any] = []
    real_compile = torch.compile

    def compile_for_test(model: Any, **options: Any) -> Any:
        compiled.append(model)
        return real_compile(model, backend="aot_eager", **options)

    monkeypatch.setattr(torch, "compile", compile_for_test)
    config = load_config(TINY)
    full = train(config, tmp_path / "full", progress=False)
    assert len(compiled) == 2 and isinstance(compiled[0], nn.Module)  # the model, then the losses
    paused = train(config, tmp_path / "resumed", stop_at_step=2, progress=False)
    assert paused.status == "interrupted" and paused.step == 2
    resumed = train(None, tmp_path / "resumed", resume=True, progress=False)
    assert full.status == resumed.status == "finished" and full.step == resumed.step == 4

    a = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["state_dict"]
    assert not any("_orig_mod" in key for key in a)
    assert a.keys() == build_model(config.model).state_dict().keys() == b.keys()
    assert len(compiled) == 6  # every run trained through its own compiled model and losses
    # The same compiled graphs on the same thread count: the resumed run ends bit-identical.
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_compile_without_a_cpp_compiler_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._inductor.cpp_builder as builder

    def missing() -> str:
        raise RuntimeError("no compiler")

    monkeypatch.setattr(builder, "get_cpp_compiler", missing)
    with pytest.raises(TsnError, match=r"needs a C\+\+ compiler .*--set compile=false"):
        _check_compiler(torch.device("cpu"))
    _check_compiler(torch.device("meta"))  # only the CPU builds C++ kernels
