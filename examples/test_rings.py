"""The worked example of docs/ADDING_A_DOMAIN.md runs through the protocol and its loss falls."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from reed_core import Domain, TrainingData  # noqa: E402
from reed_core.testing import assert_loss_decreases  # noqa: E402
from rings import PRESET, RingData, RingDomain, main  # noqa: E402


def test_rings_domain_trains_both_methods(capsys):
    assert isinstance(RingDomain(RingData(64)), Domain) and isinstance(RingData(64), TrainingData)
    assert RingDomain(RingData(64)).capture(PRESET.latents[0].layer) == ("block1", 64)
    results = main(["--steps", "60", "--batch-size", "32"])
    for losses, ring_err, _ in results.values():
        assert_loss_decreases(losses, min_drop=0.2)
        assert 0.0 <= ring_err < 1.0
    assert "ring err" in capsys.readouterr().out
