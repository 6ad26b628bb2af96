"""Named laps add up to the total."""

import time

from fedkd.utils.timing import Laps


def test_laps_sum_to_the_total_and_moves_keep_the_sum():
    laps = Laps()
    with laps("a"):
        time.sleep(0.02)
    with laps("b"):
        time.sleep(0.01)
    laps.move("a", "c", 0.005)
    parts = laps.split()
    assert set(parts) == {"a", "b", "c", "other", "total"}
    assert abs(sum(v for k, v in parts.items() if k != "total") - parts["total"]) < 1e-9
    assert parts["a"] >= 0.015 and parts["c"] == 0.005 and parts["b"] >= 0.01
    laps.move("b", "d", 99.0)  # never moves more than the source holds
    assert laps.seconds["b"] == 0.0
