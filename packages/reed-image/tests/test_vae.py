"""The latent path with a tiny random-init diffusers AutoencoderKL (a real SD-VAE loads the same way)."""

import numpy as np
import pytest
import torch

from reed_image.cli import main
from reed_image.data import load_images, to_tensor
from reed_image.presets import image_trainer, paper_preset
from reed_image.vae import LatentInterpolant, load_vae

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    torch.manual_seed(0)
    ae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                                 layers_per_block=1, norm_num_groups=4, sample_size=32, scaling_factor=0.5)
    path = tmp_path_factory.mktemp("vae") / "tiny-sd-vae"
    ae.save_pretrained(path)
    return path


def test_posterior_is_sampled_per_step_from_the_moments():
    proc = LatentInterpolant(scale=0.5, shift=0.1)
    mean = torch.randn(2, 4, 3, 3)
    sharp = torch.cat([mean, torch.full_like(mean, -40.0)], dim=1)  # ~zero variance: z = (mean - shift) * scale
    assert torch.allclose(proc.latent(sharp), (mean - 0.1) * 0.5, atol=1e-6)
    wide = torch.cat([mean, torch.zeros_like(mean)], dim=1)
    draw = [proc.latent(wide, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(draw[0], draw[1]) and not torch.allclose(draw[0], draw[2])
    c = proc.corrupt(sharp, torch.zeros(2), generator=torch.Generator().manual_seed(0))
    assert c.x_t.shape == (2, 4, 3, 3) and torch.allclose(c.x_t, (mean - 0.1) * 0.5, atol=1e-6)  # t = 0: clean


def test_vae_encodes_grey_images_and_decodes_them_back_to_grey(vae_dir):
    vae = load_vae(vae_dir)
    assert (vae.scale, vae.channels, vae.factor, vae.latent_size(32)) == (0.5, 4, 2, 16)
    x = to_tensor(load_images()[1].images[:3])
    m = vae.moments(x)
    assert m.shape == (3, 8, 16, 16) and not vae.ae.training
    img = vae.decode(vae.process().latent(m), channels=1)
    assert img.shape == (3, 1, 32, 32) and img.abs().max() <= 1.0
    with pytest.raises(ValueError, match="multiple of the VAE's downsampling factor 2"):
        vae.latent_size(33)
    with pytest.raises(FileNotFoundError, match="not a diffusers AutoencoderKL directory"):
        load_vae(vae_dir.parent)


def test_sit_trains_on_vae_latents_and_samples_decoded_images(vae_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    npz = tmp_path / "set.npz"
    np.savez(npz, images=rng.integers(0, 255, (40, 28, 28), dtype=np.uint8), labels=np.arange(40) % 10)
    out = tmp_path / "run"
    assert main(["train", "--method", "reed", "--data", str(npz), "--vae", str(vae_dir), "--steps", "2",
                 "--batch-size", "8", "--out", str(out), "--device", "cpu", "--cache-dir", str(tmp_path / "c")]) == 0
    grid, npz_out = tmp_path / "g.png", tmp_path / "s.npz"
    assert main(["sample", "--checkpoint", str(out), "--num", "4", "--steps", "3", "--grid", str(grid),
                 "--npz", str(npz_out), "--quiet"]) == 0
    assert np.load(npz_out)["images"].shape == (4, 32, 32, 1)  # decoded pixels, not 16x16x4 latents
    assert main(["sample", "--checkpoint", str(out), "--vae", str(tmp_path / "gone"), "--grid", str(grid)]) == 2
    assert "its VAE" in capsys.readouterr().err
    train, _ = load_images()
    with pytest.raises(ValueError, match="needs cached teachers"):
        image_trainer("reed", train.subset(np.arange(10)), None, vae=vae_dir, preset=paper_preset(cached=False))
