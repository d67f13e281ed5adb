"""``tsn export``: a checkpoint -> one ONNX file that serves every task (see :mod:`tsn.inference.export`)."""

from __future__ import annotations

import argparse

from tsn.utils.checks import escaped

HELP = "export a checkpoint to one ONNX file (image + task index in, the task's output out)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument("--checkpoint", required=True, help="a tsn checkpoint (.pt / .safetensors) or run folder")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset, 18 or newer (default: the exporter's; the supported range is checked "
                             "before anything runs)")
    parser.add_argument("--verify-size", type=int, default=64,
                        help="check onnxruntime against PyTorch for every task on random SIZE x SIZE and "
                             "(SIZE+1) x (SIZE+3) images (default 64; 0 skips the check; otherwise from the "
                             "model's minimum input side, e.g. 64 for ResNets, to 2048)")


def run(args: argparse.Namespace) -> int:
    from tsn.inference.export import check_opset, export_onnx
    from tsn.inference.input_size import check_input_size, input_size
    from tsn.models.checkpoint import load_model
    from tsn.utils.checks import ensure_writable_file

    # Up front, before the checkpoint is loaded and the (slow) export runs.
    check_opset(args.opset)
    # Never onto the input; the folder is created when the file is written, so a refusal leaves nothing behind.
    ensure_writable_file(args.onnx, "--onnx", create_parent=False, inputs=[args.checkpoint])
    if args.verify_size != 0:
        input_size(args.verify_size, "--verify-size")  # the syntax and the largest side, before loading
    model = load_model(args.checkpoint)
    if args.verify_size != 0:
        check_input_size(model, args.verify_size, "--verify-size")  # the model's minimum: every command's rule
    report = export_onnx(model, args.onnx, opset=args.opset, verify_size=args.verify_size or None)
    print(f"wrote {escaped(report.path)}: inputs {', '.join(report.inputs)}; outputs {', '.join(report.outputs)}; "
          f"tasks {', '.join(model.tasks)}")
    if report.max_abs_diff:
        worst = max(report.max_abs_diff.values())
        print(f"onnxruntime matches PyTorch on every task (largest difference {worst:.1e})")
    return 0
