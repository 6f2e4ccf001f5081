"""One run in several processes (`torchrun`, `accelerate launch`, several nodes) that behaves like one process.

A launcher starts the same command N times (WORLD_SIZE, RANK, LOCAL_RANK in the environment) and the Trainer
shares each training step between them (DistributedDataParallel). Everything around the training must happen once,
and `Processes` says who does it:

    main         the process that writes: the model folder is claimed, the dataset built, the image cache filled,
                 the model, reports, card and ONNX written and the pushes made by it alone. That is process 0, or
                 with --save-on-each-node (nodes that share no disk) the first process of every node.
    main_first   the main process does a step first (builds the dataset), the others wait and then read its result;
                 when the step fails on the main process, the others stop quietly
    share        process 0's value, given to every process (the staging folder's name)
    close        the end of the run, together
    quiet        standard output from process 0 only: every progress and summary line is printed once (errors,
                 on standard error, still come from whichever process has one)

The distributed state is the Trainer's own (`TrainingArguments.distributed_state`): the same device choice (CUDA,
MPS, XPU, ... or the CPU with gloo), the same process group. Without a launcher every process is the main one and
all of this costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch.distributed as dist
from transformers import logging as transformers_logging


class Processes:
    def __init__(self, training):
        """``training``: the run's TrainingArguments (its distributed state is set up on first use)."""
        self.args = training

    @property
    def count(self) -> int:
        return self.args.world_size

    @property
    def index(self) -> int:
        return self.args.process_index

    @property
    def is_main(self) -> bool:
        """This process writes the run's files (see the module docstring)."""
        return self.args.should_save

    @contextlib.contextmanager
    def main_first(self):
        """``with processes.main_first():`` the main process runs the block, then the others do. When it fails
        there (a bad input, a full disk: its one error line is printed), the others stop quietly with the same exit
        status instead of each printing the traceback of a broken connection."""
        if self.count == 1:
            yield
            return
        if not self.is_main:
            if self._any_failed(False):
                raise SystemExit(2)
            yield
            return
        try:
            yield
        except BaseException:
            self._any_failed(True)
            raise
        self._any_failed(False)

    def close(self) -> None:
        """All processes end together and take the process group down with them (a process that exits while its
        peers still hold connections can abort in gloo's threads)."""
        if self.count > 1:
            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()

    def _any_failed(self, failed: bool) -> bool:
        """Every process says whether it failed; all learn whether any did (a barrier that carries one bit)."""
        said = [None] * self.count
        dist.all_gather_object(said, failed)
        return any(said)

    def share(self, value):
        """Process 0's ``value`` (any picklable object), in every process."""
        if self.count == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def quiet(self):
        """Standard output, transformers' warnings and datasets' progress bars from process 0 only."""
        if self.index == 0:
            yield
            return
        from datasets.utils.logging import disable_progress_bar  # datasets: not loaded before the run starts

        transformers_logging.set_verbosity_error()
        disable_progress_bar()
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            try:
                yield
            finally:
                sys.stdout.flush()
