import pytest
import torch

from handler.mae import MAEConfig, MaskedAutoencoder


@pytest.mark.parametrize("chans,size,patch", [(1, 28, 4), (3, 32, 2), (3, 32, 4)])
def test_shapes_and_mask_counts(chans, size, patch):
    torch.manual_seed(0)
    mae = MaskedAutoencoder(MAEConfig(img_size=size, in_chans=chans, patch_size=patch, dim=32, enc_depth=1,
                                      enc_heads=2, dec_depth=1, dec_heads=2))
    x = torch.rand(5, chans, size, size) * 2 - 1
    n_patches = (size // patch) ** 2
    recon, mask = mae(x, mask_ratio=0.75)
    assert recon.shape == x.shape and mask.shape == (5, n_patches)
    assert torch.all(mask.sum(1) == n_patches - int(n_patches * 0.25))
    recon0, mask0 = mae(x, mask_ratio=0.0)
    assert recon0.shape == x.shape and mask0.sum() == 0


def test_masks_differ_per_sample_and_unmasked_is_deterministic():
    torch.manual_seed(0)
    mae = MaskedAutoencoder(MAEConfig(dim=32, enc_depth=1, enc_heads=2, dec_depth=1, dec_heads=2)).eval()
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    _, mask = mae(x, 0.75)
    assert not torch.equal(mask[0], mask[1])
    with torch.no_grad():
        assert torch.allclose(mae(x, 0.0)[0], mae(x, 0.0)[0])


def test_masked_patches_do_not_leak_into_the_encoder():
    """With a mask, the visible patches alone determine the output: changing a masked patch changes nothing."""
    torch.manual_seed(0)
    mae = MaskedAutoencoder(MAEConfig(dim=32, enc_depth=1, enc_heads=2, dec_depth=1, dec_heads=2)).eval()
    x = torch.rand(1, 1, 28, 28) * 2 - 1
    torch.manual_seed(1)
    out1, mask = mae(x, 0.75)
    masked = int(torch.nonzero(mask[0])[0])
    row, col = divmod(masked, mae.grid)
    x2 = x.clone()
    x2[..., row * 4:(row + 1) * 4, col * 4:(col + 1) * 4] = 1.0
    torch.manual_seed(1)
    out2, mask2 = mae(x2, 0.75)
    assert torch.equal(mask, mask2)
    assert torch.allclose(out1, out2, atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        MAEConfig(img_size=28, patch_size=3)
    with pytest.raises(ValueError, match="divisible"):
        MAEConfig(dim=30, enc_heads=4)
    mae = MaskedAutoencoder(MAEConfig(dim=32, enc_depth=1, enc_heads=2, dec_depth=1, dec_heads=2))
    with pytest.raises(ValueError, match="mask_ratio"):
        mae(torch.zeros(1, 1, 28, 28), 1.0)
