"""Experiments built on the library (not part of training or evaluation): each module is one study with
its own CLI, ``python -m snapgen.experiments.<name> --help``.

    decoder_world_proof   tiny decoder vs a stand-in VAE on the synthetic world (CPU-scale proof)
"""
