"""Objectives: small loss modules kept apart from the loop (``snapgen.training.engine``).

Each declares what it trains (``build`` -> ``Parts``: modules on the main optimizer, the EMA'd model,
critics on their own optimizer), draws its randomness from the step's generator, and returns per-sample
terms for the log.

| name      | class                   | trains                                   | critic                     |
|-----------|-------------------------|------------------------------------------|----------------------------|
| flow      | RectifiedFlow           | unet (+ text_proj)                       | -                          |
| kd        | KnowledgeDistillation   | unet (+ text_proj) + projector           | -                          |
| ladd      | LADD                    | unet (+ text_proj)                       | disc_heads (own AdamW)     |
| decoder   | TinyDecoderObjective    | decoder                                  | disc (own AdamW)           |
"""
