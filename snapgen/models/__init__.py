"""SnapGen models: the efficient U-Net (``unet``), its layers, the tiny decoder (``decoder``), the one feature-tap
mechanism (``taps``) and the one save/load convention (``pretrained``)."""
from snapgen.models.unet import SnapGenUNet

__all__ = ["SnapGenUNet"]
