"""What ``fedkd-distill`` says between epochs: the time left, and a student stuck at chance.

A data-free run's length depends on the synthesizer far more than on its epochs (CMI's three short
epochs can take minutes), and a synthesizer that cannot teach a student on the user's data leaves
it at chance with no error. :class:`EpochWatch` logs, after every epoch, the time the remaining
epochs should take (epochs left x mean seconds per epoch so far, evaluation included) and warns
once the student's accuracy has sat within 1.5x of chance for :data:`CHANCE_EPOCHS` epochs in a
row, naming the likely remedies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: Accuracy at most this many times 1/num_classes counts as chance.
CHANCE_FACTOR = 1.5
#: Consecutive epochs at chance before the warning.
CHANCE_EPOCHS = 2


def at_chance(accuracy: float, num_classes: int) -> bool:
    """Whether ``accuracy`` is within :data:`CHANCE_FACTOR` of guessing among ``num_classes`` classes."""
    return accuracy <= CHANCE_FACTOR / max(num_classes, 1)


def duration(seconds: float) -> str:
    """``"42 s"``, ``"6 min 5 s"``, ``"2 h 03 min"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class EpochWatch:
    """Follows a distillation's epochs; call :meth:`after_epoch` once per epoch.

    Args:
        epochs: the run's last epoch; ``start_epoch``: its first in this process (after a resume,
            the one after the checkpoint), from when the clock runs.
        num_classes: the data's classes (chance is ``1 / num_classes``).
        synthesizer: the synthesizer's name, for the warning.
        iterations_per_epoch: the run's budget per epoch, for the warning.
        teacher_accuracy: the teacher's accuracy on the evaluation split, if known.
        split: the evaluation split's name (``test`` or ``holdout``).
        log: the logger to write to; ``clock``: seconds (tests pass their own).
    """

    def __init__(
        self, epochs: int, start_epoch: int, num_classes: int, synthesizer: str, iterations_per_epoch: int, *,
        teacher_accuracy: float | None = None, split: str = "test", log: logging.Logger | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.epochs, self.start_epoch, self.num_classes = int(epochs), int(start_epoch), int(num_classes)
        self.synthesizer, self.iterations_per_epoch = synthesizer, int(iterations_per_epoch)
        self.teacher_accuracy, self.split = teacher_accuracy, split
        self.log = log or logging.getLogger("fedkd.distill")
        self.clock = clock
        self.started = clock()
        self.streak = 0  # consecutive epochs at chance

    def after_epoch(self, epoch: int, accuracy: float) -> None:
        """Log the time left after ``epoch`` and, when the student has sat at chance for
        :data:`CHANCE_EPOCHS` epochs in a row, warn once for that stretch."""
        done = epoch - self.start_epoch + 1
        left = self.epochs - epoch
        if done > 0 and left > 0:
            mean = (self.clock() - self.started) / done
            self.log.info("about %s left (%d epoch%s x %.1f s)", duration(left * mean), left, "s" * (left != 1), mean)
        self.streak = self.streak + 1 if at_chance(accuracy, self.num_classes) else 0
        if self.streak == CHANCE_EPOCHS:
            self.log.warning(self.chance_warning(accuracy))

    def chance_warning(self, accuracy: float) -> str:
        """The warning for a student at chance, with the remedies that fit this run."""
        chance = 1 / max(self.num_classes, 1)
        head = (
            f"the student's {self.split} accuracy has stayed at chance for {CHANCE_EPOCHS} epochs "
            f"({accuracy:.4f}; 1/{self.num_classes} = {chance:.4f}): "
        )
        if self.teacher_accuracy is not None and at_chance(self.teacher_accuracy, self.num_classes):
            return head + (
                f"the teacher itself is at chance ({self.teacher_accuracy:.4f}); train it longer (teacher.epochs) "
                "or give a better teacher.checkpoint"
            )
        remedies = []
        if "deepinversion" not in self.synthesizer.lower():
            remedies.append("a stronger synthesizer such as synthesizer=deepinversion (0.91 of KD on the "
                            "leaderboard, docs/centralized.md)")
        remedies.append(f"more iterations_per_epoch (now {self.iterations_per_epoch}) or epochs")
        return head + f"{self.synthesizer} is not teaching it on this data; try " + ", or ".join(remedies)
