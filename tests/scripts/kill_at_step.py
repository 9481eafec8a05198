"""A callback that kills its own process at a given training step, to test resuming (used through the CLI)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch import Callback


class KillAtStep(Callback):
    """Sends SIGKILL to the process when ``trainer.global_step`` reaches ``step`` (no cleanup, like a crash)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
