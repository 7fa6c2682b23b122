"""A plain re-creation of the authors' two kernel VAEs (their module names and layer order), and
a fake release with the real one's layout: shared by the release's tests and the studies'."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dwp_lib import release as rel


class _Enc7(nn.Module):
    def __init__(self, h=32, z=2):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, h, 3), nn.ELU(), nn.Conv2d(h, 2 * h, 3), nn.ELU(),
            nn.Conv2d(2 * h, 2 * h, 3), nn.ELU(),
        )  # fmt: skip
        self.fc_mu, self.fc_var = nn.Conv2d(2 * h, z, 1), nn.Conv2d(2 * h, z, 1)

    def forward(self, x):
        h = self.features(x)
        return self.fc_mu(h), F.softplus(self.fc_var(h))


class _Dec7(nn.Module):
    def __init__(self, h=32, z=2):
        super().__init__()
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(z, 2 * h, 3), nn.ELU(), nn.ConvTranspose2d(2 * h, 2 * h, 3),
            nn.ELU(), nn.ConvTranspose2d(2 * h, h, 3), nn.ELU(),
        )  # fmt: skip
        self.fc_mu, self.fc_var = nn.Conv2d(h, 1, 1), nn.Conv2d(h, 1, 1)

    def forward(self, z):
        h = self.decoder(z)
        return self.fc_mu(h), F.softplus(self.fc_var(h))


class _Enc5(nn.Module):
    def __init__(self, h=64, z=4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, h, 3, padding=1), nn.ELU(), nn.Conv2d(h, h, 3, padding=1), nn.ELU(),
            nn.Conv2d(h, 2 * h, 3), nn.ELU(), nn.Conv2d(2 * h, 2 * h, 3), nn.ELU(),
        )  # fmt: skip
        self.fc_mu, self.fc_sigma = nn.Conv2d(2 * h, z, 1), nn.Conv2d(2 * h, z, 1)

    def forward(self, x):
        h = self.features(x)
        return self.fc_mu(h), F.softplus(self.fc_sigma(h))


class _Dec5(nn.Module):
    def __init__(self, h=64, z=4):
        super().__init__()
        self.decoder = nn.Sequential(
            nn.Conv2d(z, 2 * h, 1), nn.ELU(), nn.ConvTranspose2d(2 * h, 2 * h, 3), nn.ELU(),
            nn.ConvTranspose2d(2 * h, 2 * h, 3), nn.ELU(), nn.Conv2d(2 * h, h, 1), nn.ELU(),
        )  # fmt: skip
        self.fc_mu = nn.Sequential(nn.Conv2d(h, 1, 1))
        self.fc_var = nn.Sequential(nn.Conv2d(h, 1, 1), nn.Softplus())

    def forward(self, z):
        h = self.decoder(z)
        return self.fc_mu(h), self.fc_var(h)


class AuthorsVAE(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.encoder, self.decoder = (_Enc7(), _Dec7()) if k == 7 else (_Enc5(), _Dec5())


def authors_vae(k: int, seed: int) -> AuthorsVAE:
    torch.manual_seed(seed)
    net = AuthorsVAE(k)
    with torch.no_grad():  # spread the variance heads so softplus is exercised off its linear part
        for p in net.parameters():
            p.mul_(1.5)
    return net.eval()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def place_fake_release(monkeypatch, tmp_path):
    """A fake release with the real one's layout, placed in a temporary cache; returns
    ``(release, files)`` with ``files`` the bytes of every path."""
    import io

    monkeypatch.setenv("DWP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DWP_OFFLINE", "1")
    files = {"LICENSE": b"GNU GENERAL PUBLIC LICENSE, Version 3 (a fake)\n"}
    for k, layer in ((7, "conv1"), (5, "conv2")):
        buf = io.BytesIO()
        torch.save(authors_vae(k, seed=k).state_dict(), buf)
        files[rel.AUTHORS_RELEASE.vaes[layer]] = buf.getvalue()
        files[f"data/fconv/vae{k}x{k}/params.yaml"] = f"kernel_dim: {k}\n".encode()
        for split in rel.AUTHORS_RELEASE.banks[layer]:
            buf = io.BytesIO()
            rng = np.random.default_rng(k)
            np.save(buf, (0.2 * rng.standard_normal((30, 1, k, k))).astype(np.float32))
            files[rel.AUTHORS_RELEASE.banks[layer][split]] = buf.getvalue()
    fake = rel.Release(
        repo="someone/fake-release",
        commit="0" * 40,
        licence="GPL-3.0",
        files={p: sha(b) for p, b in files.items()},
        vaes=rel.AUTHORS_RELEASE.vaes,
        banks=rel.AUTHORS_RELEASE.banks,
    )
    assert set(fake.files) == set(rel.AUTHORS_RELEASE.files)  # the same layout as the real one
    monkeypatch.setattr(rel, "AUTHORS_RELEASE", fake)
    root = rel.release_dir()
    for p, b in files.items():
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b)
    return fake, files
