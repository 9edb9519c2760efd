"""SnapGen models: the efficient U-Net (``unet``), its layers, the tiny decoder (``decoder``)."""
from snapgen.models.unet import SnapGenUNet

__all__ = ["SnapGenUNet"]
