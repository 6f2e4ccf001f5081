"""Command-line entry point behind train.py.

    python train.py [train] --data-dir DIR --output-dir OUT ...   fine-tune (the default command)
    python train.py prepare --data-dir DIR --output-dir OUT ...   build the dataset repository folder only
    python train.py predict --model OUT FILES/FOLDERS/GLOBS ...   classify images, table or CSV out
    python train.py export-onnx --model OUT                       write model.onnx (+ int8) next to the model
    python train.py publish-space --model OUT --space USER/NAME   assemble and push a Gradio Space

Each command lives in its own module as ``main(argv) -> int``; this file only dispatches and turns
HarError, and an OSError the user causes (full disk, no permission, read-only folder), into one clear line on
stderr with a non-zero exit code.
"""

from __future__ import annotations

import importlib
import sys

from har_model.errors import HarError, command
from har_model.outputs import USER_ERRNOS

COMMANDS = {
    "train": ("har_model.train.run", "fine-tune a pretrained model (default command)"),
    "prepare": ("har_model.data.build", "validate, de-duplicate and split an image folder into a HF dataset"),
    "predict": ("har_model.serve.inference", "classify images with a trained model"),
    "export-onnx": ("har_model.model_folder.onnx", "export a trained model to ONNX (+ static int8, served only if it agrees)"),
    "publish-space": ("har_model.serve.space", "publish the app and a model as a Hugging Face Space"),
}


def usage() -> str:
    """The command list `--help` prints first, naming the program as it was started (har-model or python train.py)."""
    commands = "\n".join(f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items())
    return (f"usage: {command()} [{'|'.join(COMMANDS)}] ...\n\ncommands:\n{commands}\n\n"
            f"Run `{command('COMMAND')} --help` for the options of one command.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        command, argv = argv[0], argv[1:]
    elif argv and argv[0] in ("-h", "--help") and len(argv) == 1:
        print(usage())
        print("\nOptions of the default `train` command follow.\n")
        command = "train"
    else:
        command = "train"
    module = importlib.import_module(COMMANDS[command][0])  # only the one command's imports: `--help` stays quick
    try:
        return int(module.main(argv) or 0)
    except HarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in USER_ERRNOS:
            raise  # not something the user can fix: keep the traceback for the bug report
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Publication says what the output folder holds now
        print(f"error: interrupted{f' ({exc})' if str(exc) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
