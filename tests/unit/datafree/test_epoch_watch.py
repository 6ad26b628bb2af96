"""fedkd-distill between epochs: the time left (epochs left x mean epoch seconds so far) and one
warning when the student sits at chance for two epochs in a row, with the remedies that fit."""

from __future__ import annotations

import logging

from fedkd.datafree.epoch_watch import EpochWatch, at_chance, duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _watch(caplog, clock, **kwargs) -> EpochWatch:
    options = {"epochs": 5, "start_epoch": 1, "num_classes": 10, "synthesizer": "DFADSynthesizer",
               "iterations_per_epoch": 5, **kwargs}
    return EpochWatch(**options, log=logging.getLogger("fedkd.distill"), clock=clock)


def test_time_left_after_every_epoch_but_the_last(caplog):
    clock = Clock()
    caplog.set_level("INFO", logger="fedkd.distill")
    watch = _watch(caplog, clock, epochs=3)
    for epoch, now in ((1, 100.0), (2, 260.0), (3, 300.0)):
        clock.now = now
        watch.after_epoch(epoch, 0.8)
    assert [r.getMessage() for r in caplog.records] == [
        "about 3 min 20 s left (2 epochs x 100.0 s)", "about 2 min 10 s left (1 epoch x 130.0 s)",
    ]


def test_a_resumed_run_counts_from_its_first_epoch(caplog):
    clock = Clock()
    caplog.set_level("INFO", logger="fedkd.distill")
    watch = _watch(caplog, clock, epochs=10, start_epoch=8)
    clock.now = 30.0
    watch.after_epoch(8, 0.8)
    assert caplog.records[0].getMessage() == "about 1 min 0 s left (2 epochs x 30.0 s)"


def test_chance_for_two_epochs_warns_once_per_stretch(caplog):
    clock = Clock()
    caplog.set_level("INFO", logger="fedkd.distill")
    watch = _watch(caplog, clock, epochs=8)
    for epoch, accuracy in enumerate([0.10, 0.12, 0.14, 0.60, 0.15, 0.10, 0.11, 0.09], start=1):
        clock.now += 1
        watch.after_epoch(epoch, accuracy)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # epochs 2 and 6: the second of each stretch at chance
    assert warnings[0].startswith("the student's test accuracy has stayed at chance for 2 epochs (0.1200; "
                                  "1/10 = 0.1000): DFADSynthesizer is not teaching it on this data")
    assert "synthesizer=deepinversion" in warnings[0] and "iterations_per_epoch (now 5)" in warnings[0]


def test_remedies_fit_the_run(caplog):
    clock = Clock()
    watch = _watch(caplog, clock, synthesizer="DeepInversionSynthesizer")
    assert "synthesizer=deepinversion" not in watch.chance_warning(0.1)
    teacher = _watch(caplog, clock, teacher_accuracy=0.11, split="holdout")
    message = teacher.chance_warning(0.1)
    assert "holdout accuracy" in message and "the teacher itself is at chance (0.1100)" in message


def test_helpers():
    assert at_chance(0.15, 10) and not at_chance(0.16, 10) and at_chance(0.7, 2) and not at_chance(0.8, 2)
    assert (duration(42.4), duration(365), duration(7380)) == ("42 s", "6 min 5 s", "2 h 03 min")
