"""The data options, one definition for both commands: `prepare` adds them to its parser, `train` parses the
dataclass with transformers' HfArgumentParser (har_model.train.config).

    DataArguments       -- input (--data-dir / --dataset), validation and split options
    add_data_arguments  -- the same options on an argparse parser (`prepare`)
    HelpFormatter       -- shows each option's default once: appended unless the help text states it
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from dataclasses import dataclass, field

from har_model.data.dedup import DEFAULT_NEAR_DUP_THRESHOLD
from har_model.data.scan import DEFAULT_MIN_SIDE
from har_model.imaging import DEFAULT_MAX_PIXELS

# a help text that already says what the default is ("default: all CPU cores", "(default: ...)", "Defaults to ...")
_STATES_DEFAULT = re.compile(r"\bdefaults?\b\s*(:|is|to|=)|\(default", re.IGNORECASE)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """'(default: X)' after each option's help, once: not where the help text already says it, not for switches
    that only turn another option off, and 'not set' for None."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default is argparse.SUPPRESS or action.required or not action.option_strings
                or _STATES_DEFAULT.search(text)
                or isinstance(action, argparse._StoreFalseAction)):
            return text
        default = action.default
        if default is None:
            shown = "not set"
        else:
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class DataArguments:
    """Where the images come from and how they are checked and split (shared by `prepare` and `train`)."""

    _argument_group_name = "data"

    data_dir: str | None = field(default=None, metadata=_help(
        "image folder with one sub-folder per class (validated, de-duplicated and split)"))
    dataset: str | None = field(default=None, metadata=_help(
        "instead of --data-dir: a dataset folder written by `prepare`, any dataset folder, or a Hub id"))
    seed: int = field(default=42, metadata=_help("seed of the split (same input + seed = same split)"))
    val_fraction: float = field(default=0.1, metadata=_help("fraction of each class for validation"))
    test_fraction: float = field(default=0.1, metadata=_help("fraction of each class for test"))
    min_side: int = field(default=DEFAULT_MIN_SIDE, metadata=_help("skip images smaller than this"))
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata=_help(
        "skip images with more pixels (decompression bombs)"))
    num_workers: int | None = field(default=None, metadata=_help("decoding processes (default: all CPU cores)"))
    near_dup_threshold: int = field(default=DEFAULT_NEAR_DUP_THRESHOLD, metadata=_help(
        "near duplicates: pHash differs in at most this many bits of 64 (pHash + dHash: twice that); -1 disables"))
    license: str = field(default="other", metadata=_help(
        "license id for the dataset card, e.g. odbl, cc-by-4.0"))
    image_column_name: str | None = field(default=None, metadata=_help(
        "the image column of --dataset (default: an Image column named image, img, ... or the first)"))
    label_column_name: str | None = field(default=None, metadata=_help(
        "the label column of --dataset (default: a ClassLabel column named label, labels, class, ... or the first)"))


def parse_data_arguments(namespace: argparse.Namespace) -> DataArguments:
    """The DataArguments of a namespace parsed with ``add_data_arguments`` (`prepare`'s command line)."""
    return DataArguments(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(DataArguments)})


def add_data_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the DataArguments options (--data-dir, --seed, ...) to an argparse ``parser``, in a "data" group; an
    option the parser already has is left alone."""
    existing = set(parser._option_string_actions)  # noqa: SLF001 - argparse has no public way to ask
    group = parser.add_argument_group(DataArguments._argument_group_name)
    hints = typing.get_type_hints(DataArguments)
    for f in dataclasses.fields(DataArguments):
        flag = f"--{f.name.replace('_', '-')}"
        kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
        if flag not in existing:
            group.add_argument(flag, type=kind, default=f.default, help=f.metadata["help"])
    return parser
