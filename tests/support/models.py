"""The reference model most tests play with (the MNIST MLP, cached on disk by `mlkit.models.reference`) and
helpers about its guest run."""

from __future__ import annotations

import functools

import numpy as np

from mlkit import models
from mlkit.format import ModelBuilder
from mlkit.io import encode_payload
from rollml.harness.campaign import keccak_reads


@functools.cache
def mnist() -> tuple[bytes, bytes]:
    """The MNIST MLP's model bytes and its example input payload (a test digit)."""
    exp = models.reference("mnist-mlp")
    return exp.model, models.example_payload(exp)


def first_keccak_read(model: bytes, payload: bytes, output_hash: bytes) -> int:
    """The first step of the guest run (for this claimed output hash) whose pre-state reads a keccak
    preimage part: a leaf that needs the part loaded before it can be stepped."""
    reads = keccak_reads(model, payload, output_hash)
    if not reads:
        raise AssertionError("no keccak read in the scanned steps")
    return reads[0]


@functools.cache
def tiny_generator() -> bytes:
    """A small seeded generator with the GanNFT's interface (latent [1, 100, 1, 1] -> image [1, 3, 16, 16] in
    [-1, 1]): what a GAN mint runs in tests, in ~2M VM steps instead of the DCGAN's 3.4G."""
    import torch
    from torch import nn

    from mlkit.export import export_module

    torch.manual_seed(7)
    net = nn.Sequential(
        nn.ConvTranspose2d(100, 16, 4, 1, 0),
        nn.ReLU(),
        nn.ConvTranspose2d(16, 8, 4, 2, 1),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 3, 4, 2, 1),
        nn.Tanh(),
    ).eval()
    with torch.no_grad():
        net[4].weight.mul_(8.0)  # contrast: a freshly initialised last layer draws a flat grey
    return export_module(net, torch.zeros(1, 100, 1, 1))


def tiny_model() -> bytes:
    """relu of a [1, 4] f32 input: registrable, runnable in the VM in a few ms."""
    b = ModelBuilder()
    b.output(b.relu(b.input((1, 4))))
    return b.to_bytes()


def tiny_input() -> bytes:
    return encode_payload([np.array([[1.0, -2.0, 3.0, -4.0]], np.float32)])
