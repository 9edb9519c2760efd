"""One training engine for every SnapGen objective.

    config.py       typed ``--set key=value`` overrides and config files, for any frozen config dataclass
    engine.py       the loop: accelerate, per-step generators, optimizers, LR schedule, EMA, logs, resume
    ema.py          EMA with warm-up
    checkpoint.py   one checkpoint format (atomic, ``latest`` pointer, keep_ckpts) and log trimming
    t2i.py          text-to-image config (``TrainConfig``), U-Net / text / data builders, batch indices
    decoder_data.py image pools, random crops and the frozen VAE encoder of the tiny-decoder objective
    objectives/     the losses: rectified flow, KD, LADD, tiny decoder (see objectives/__init__.py)

User-facing commands stay thin wrappers: ``python -m snapgen.train``, ``python -m snapgen.train_distill``,
``python -m snapgen.train_decoder``.
"""
