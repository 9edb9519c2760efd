"""VQA backends for DPG-Bench: ``answer(image, question) -> str``.

* :class:`TransformersVQA` - any transformers visual-question-answering model in a local folder
  (BLIP VQA: generative; ViLT VQA: answer classifier).
* :class:`MPlugVQA` - the official evaluator (mPLUG-large, ModelScope); only when ``modelscope`` is
  importable, from a local model folder.
* :class:`evals.dpg.world.WorldVQA` - exact answers for the synthetic world.

Weights are never fetched: every backend loads from a local path and raises
:class:`snapgen.io.MissingWeightsError` naming that path when it is absent.
"""
from __future__ import annotations

import abc
from pathlib import Path

from snapgen.io import require_path, sha256_dir

from .scoring import to_yes_no

__all__ = ["VQABackend", "TransformersVQA", "MPlugVQA", "to_yes_no"]

OFFICIAL_MPLUG_ID = "damo/mplug_visual-question-answering_coco_large_en"  # the official evaluator


class VQABackend(abc.ABC):
    """A visual question answering model. ``answer`` returns the model's raw text answer; scoring
    maps it to yes/no (:func:`to_yes_no`, or the exact ``== "yes"`` test in official mode)."""

    name: str = "vqa"

    @abc.abstractmethod
    def answer(self, image, question: str) -> str:
        """``image``: a PIL image (one tile); returns the answer text, e.g. ``"yes"``."""

    def info(self) -> dict:
        """What a result record needs to name this evaluator."""
        return {"name": self.name}


class TransformersVQA(VQABackend):
    """A transformers VQA model + processor from a local folder (``save_pretrained`` layout)."""

    def __init__(self, model, processor, *, name: str, weights_sha256: str | None = None,
                 device: str = "cpu", max_new_tokens: int = 10):
        self.model = model.eval().to(device)
        self.processor = processor
        self.name = name                       # e.g. "blip:/models/blip-vqa-base"
        self.weights_sha256 = weights_sha256   # content hash of the model folder (None if skipped)
        self.device = device                   # torch device string
        self.max_new_tokens = max_new_tokens   # generative models: answer length cap

    @classmethod
    def from_pretrained(cls, local_dir: str | Path, *, device: str = "cpu", dtype=None,
                        max_new_tokens: int = 10, hash_weights: bool = True) -> "TransformersVQA":
        path = require_path(
            local_dir, "transformers VQA model",
            "Pass a local folder saved with save_pretrained() holding config.json, the weights and "
            "the processor files (e.g. a download of Salesforce/blip-vqa-base or "
            "dandelin/vilt-b32-finetuned-vqa).", must_contain=("config.json",))
        from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

        model = AutoModelForVisualQuestionAnswering.from_pretrained(path, dtype=dtype)
        processor = AutoProcessor.from_pretrained(path)
        digest = sha256_dir(path) if hash_weights else None
        return cls(model, processor, name=f"{model.config.model_type}:{path}", weights_sha256=digest,
                   device=device, max_new_tokens=max_new_tokens)

    def answer(self, image, question: str) -> str:
        import torch

        inputs = self.processor(images=image.convert("RGB"), text=question, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs and self.model.dtype != inputs["pixel_values"].dtype:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.no_grad():
            if self._is_classifier():
                logits = self.model(**inputs).logits  # (1, num_answers)
                return self.model.config.id2label[int(logits.argmax(-1)[0])]
            tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)  # (1, T)
        return self.processor.decode(tokens[0], skip_special_tokens=True).strip()

    def _is_classifier(self) -> bool:
        # ViLT-style VQA predicts one of a fixed answer list; BLIP-style VQA generates text.
        return self.model.config.model_type == "vilt"

    def info(self) -> dict:
        return {"name": self.name, "weights_sha256": self.weights_sha256,
                "max_new_tokens": self.max_new_tokens}


class MPlugVQA(VQABackend):
    """The official DPG-Bench evaluator, mPLUG-large VQA, through a ModelScope pipeline.

    Needs the optional ``modelscope`` package (not in snapgen-bench's dependencies) and a local
    copy of ``damo/mplug_visual-question-answering_coco_large_en``.
    """

    def __init__(self, local_dir: str | Path, *, device: str = "cpu"):
        try:
            from modelscope.pipelines import pipeline
            from modelscope.utils.constant import Tasks
        except ImportError as e:
            raise ImportError(
                "MPlugVQA needs the optional 'modelscope' package (and its mPLUG dependencies), "
                "which snapgen-bench does not install: `pip install modelscope`, or use "
                f"TransformersVQA with a local BLIP/ViLT VQA folder. ({e})") from e
        path = require_path(local_dir, "mPLUG-large VQA model (ModelScope)",
                            f"Download ModelScope model '{OFFICIAL_MPLUG_ID}' to a local folder "
                            "and pass that folder.")
        self.name = f"mplug:{path}"
        self.path = path
        self.pipeline = pipeline(Tasks.visual_question_answering, model=str(path), device=device)

    def answer(self, image, question: str) -> str:
        return self.pipeline({"image": image, "question": question})["text"]

    def info(self) -> dict:
        return {"name": self.name, "official_id": OFFICIAL_MPLUG_ID}
