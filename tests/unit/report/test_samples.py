"""Sample grids as PNG files in the run folder: RunLogger.images, fedkd-distill per epoch, FedFTG per round."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fedkd.utils.run_logger import MIN_TILE, SAMPLES_DIR, RunLogger, tile_scale


def grid_size(n: int, nrow: int, side: int, padding: int = 2) -> tuple[int, int]:
    """(width, height) of torchvision's make_grid of ``n`` square ``side`` images, each enlarged
    by a whole factor to at least ``MIN_TILE`` pixels."""
    side *= -(-MIN_TILE // side)
    cols, rows = min(n, nrow), -(-n // nrow)
    return cols * (side + padding) + padding, rows * (side + padding) + padding


@pytest.mark.parametrize("tensorboard", [False, True])
def test_images_writes_a_denormalised_png_grid(tmp_path, digits, tensorboard):
    spec = digits.spec
    images = digits.train.x[:20]
    with RunLogger(tmp_path, tensorboard=tensorboard) as logger:
        path = logger.images("server/samples", images, 3, spec.mean, spec.std, nrow=8)
    assert path == tmp_path / SAMPLES_DIR / "server_samples_3.png"  # "/" in the tag does not make a folder
    png = Image.open(path)
    png.load()
    assert png.format == "PNG" and png.size == grid_size(20, 8, spec.image_size)
    # The first cell holds the first image, un-normalised back to [0, 1] (then 0..255), each pixel
    # a scale x scale square (nearest-neighbour enlargement): every scale-th pixel is the original.
    scale = tile_scale(spec.image_size)
    assert scale == 3 and spec.image_size * scale >= MIN_TILE
    side = spec.image_size * scale
    cell = np.asarray(png.convert("L"), dtype=np.int16)[2 : 2 + side, 2 : 2 + side]
    pixels = cell[::scale, ::scale]
    assert (cell[1::scale, 2::scale] == pixels).all()  # sharp squares, not interpolated
    expected = (images[0, 0] * spec.std[0] + spec.mean[0]).clamp(0, 1).mul(255).round().numpy()
    assert np.abs(pixels - expected).max() <= 1
    assert pixels.max() > 200 and pixels.min() < 50  # a digit, not a normalised (mostly negative) tensor
    assert (tmp_path / "tb").is_dir() == tensorboard


def test_fedkd_distill_writes_one_sample_grid_per_epoch(tmp_path, digits, digits_teacher):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fedkd.cli.common import CONF_DIR, RunContext
    from fedkd.cli.distill import run_distillation
    from fedkd.config import register_schemas
    from fedkd.models.checkpoint import model_meta
    from fedkd.utils.checkpoint import save_model

    ckpt = tmp_path / "teacher.pt"
    save_model(ckpt, digits_teacher, **model_meta({"name": "lenet5"}, digits.spec))
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="centralized", overrides=[
            "device=cpu", "tensorboard=false", "preview_images=10", f"teacher.checkpoint={ckpt}", "synthesizer=dfad",
            "epochs=2", "iterations_per_epoch=1", "student_batch_size=32", "synthesizer.batch_size=32",
            "synthesizer.generator.ngf=4",
        ])
    ctx = RunContext.create(cfg, out_dir=tmp_path / "run")
    with ctx.logger:
        run_distillation(cfg, ctx)
    pngs = sorted(p.name for p in (tmp_path / "run" / SAMPLES_DIR).iterdir())
    assert pngs == ["synthetic_1.png", "synthetic_2.png"]  # one per epoch, even without TensorBoard
    for name in pngs:
        assert Image.open(tmp_path / "run" / SAMPLES_DIR / name).size == grid_size(10, 8, 28)


def test_fedftg_server_writes_sample_grids_every_image_every_rounds(compare_dir):
    # The shared comparison runs FedFTG with image_every=1 for 2 rounds; the preview has 64 images.
    samples = compare_dir / "runs" / "fedftg" / "seed0" / SAMPLES_DIR
    assert sorted(p.name for p in samples.iterdir()) == ["server_samples_1.png", "server_samples_2.png"]
    png = Image.open(samples / "server_samples_2.png")
    assert png.format == "PNG" and png.size == grid_size(64, 8, 28)
    assert not (compare_dir / "runs" / "fedavg" / "seed0" / SAMPLES_DIR).exists()  # FedAvg synthesises nothing


def test_images_accepts_unnormalised_input(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        path = logger.images("x", torch.full((3, 3, 5, 5), 0.5), 0)  # RGB, no mean/std
    assert Image.open(path).size == grid_size(3, 8, 5)


def test_a_labelled_grid_is_ordered_by_class_and_names_each_tile(tmp_path, digits):
    from dataclasses import replace

    from fedkd.report.samples import by_class

    spec = replace(digits.spec, class_names=tuple(f"class {k}" for k in range(10)))
    images, labels = digits.train.x[:16], torch.as_tensor(digits.train.y[:16])
    ordered, names = by_class(images, labels, spec)
    assert names == [f"class {k}" for k in sorted(labels.tolist())]
    assert torch.equal(ordered[0], images[int(torch.argsort(labels, stable=True)[0])])
    assert by_class(images, None, spec) == (images, None)  # a method without labels: as it is
    assert by_class(images, labels, digits.spec)[1][0] == str(int(labels.min()))  # no names: the index
    with RunLogger(tmp_path, tensorboard=False) as logger:
        plain_png = logger.images("plain", ordered, 1, spec.mean, spec.std)
        named_png = logger.images("named", ordered, 1, spec.mean, spec.std, labels=names)
    plain, named = (np.asarray(Image.open(path).convert("L")) for path in (plain_png, named_png))
    assert plain.shape == named.shape == grid_size(16, 8, 28)[::-1]
    corner = (slice(2, 2 + 16), slice(2, 2 + 40))  # the first tile's top-left corner holds its label
    assert (plain[corner] != named[corner]).any()
    assert (plain[40:80, 40:80] == named[40:80, 40:80]).all()  # the rest of the tile is the image


def test_labelled_preview_gives_the_generated_labels_without_counting_samples():
    from fedkd.datafree.synthesizers.base import Synthesizer

    class Labelled(Synthesizer):
        def __init__(self):  # no generator, no spec: only what the preview reads
            self.samples_generated = 0

        def synthesize(self, teacher, student):
            return {}

        def sample(self, n):
            self.samples_generated += n
            return torch.zeros(n, 1, 4, 4), torch.arange(n) % 3

    class OwnPreview(Labelled):
        def preview(self, n=64):
            return torch.ones(n, 1, 4, 4)

    x, y = Labelled().labelled_preview(6)
    assert x.shape == (6, 1, 4, 4) and y.tolist() == [0, 1, 2, 0, 1, 2]
    synth = Labelled()
    synth.preview(5)
    assert synth.samples_generated == 0
    x, y = OwnPreview().labelled_preview(2)
    assert y is None and x.sum() == 2 * 16
