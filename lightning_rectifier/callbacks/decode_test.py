"""``DecodeTestSet``: word error rate next to frame error when ``test`` runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from lightning_rectifier.data.datamodule import AlignedFramesDataModule
from lightning_rectifier.data.demo import PREFIX as DEMO_PREFIX
from lightning_rectifier.decode.directory import graph_builder

__all__ = ["DecodeTestSet"]


class DecodeTestSet(Callback):
    """Decodes the test set when ``test`` runs and logs word error rate: ``test/wer`` and its parts.

    Add it to a run to make ``lightning-rectifier test`` report WER next to frame error (the demo recipe does)::

        trainer:
          callbacks:
            - class_path: lightning_rectifier.callbacks.DecodeTestSet
              init_args: {graph: exp/tri4/graph/HCLG.fst, words: exp/tri4/graph/words.txt,
                          transition_model: exp/tri4_ali/final.mdl}

    Without ``graph``, a model trained on the embedded corpus decodes with the corpus's digit grammar. The utterances
    decoded are those of the test set as loaded for ``test`` (an utterance skipped for want of an alignment is not
    decoded; ``lightning-rectifier decode`` decodes every utterance of a directory). Each DDP process decodes its share
    of them; error counts are summed, so the WER is exact. ``hyp.txt`` and ``wer.json`` go to ``<log_dir>/decode/``.

    Args:
        graph: Decoding graph (Kaldi ``HCLG.fst`` or a senone-labelled FST); None: the demo digit grammar.
        words: The graph's ``words.txt`` (default: next to the graph).
        transition_model: ``final.mdl`` of an HCLG over transition-ids.
        grammar: ``word`` (isolated words) or ``loop`` (connected words), for the demo grammar.
        acoustic_scale: Scale of the log-likelihoods.
        insertion_penalty: Cost added per word.
        beam: Decoding beam.
        max_active: Most active states per frame.

    Example:
        >>> DecodeTestSet(grammar="word").grammar
        'word'
    """

    def __init__(
        self,
        graph: str | None = None,
        words: str | None = None,
        transition_model: str | None = None,
        grammar: Literal["word", "loop"] = "loop",
        acoustic_scale: float = 0.1,
        insertion_penalty: float = 0.0,
        beam: float = 13.0,
        max_active: int = 7000,
    ) -> None:
        if acoustic_scale <= 0 or beam <= 0:
            raise ValueError(f"expected acoustic_scale > 0 and beam > 0, got {acoustic_scale}, {beam}")
        self.graph, self.words, self.transition_model = graph, words, transition_model
        self.grammar, self.acoustic_scale, self.insertion_penalty = grammar, acoustic_scale, insertion_penalty
        self.beam, self.max_active = beam, max_active
        self.last: dict[str, float] = {}

    def _decoding_graph(self, trainer: Trainer, num_senones: int) -> Any:
        train_dir = str(getattr(getattr(trainer, "datamodule", None), "hparams", {}).get("train_dir", ""))
        build = graph_builder(
            num_senones=num_senones,
            graph=self.graph,
            words=self.words,
            transition_model=self.transition_model,
            trained_on_demo=train_dir.startswith(DEMO_PREFIX),
            grammar=self.grammar,
        )
        return build(self.insertion_penalty)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Decodes this process's share of the test utterances and logs the summed error counts."""
        from lightning_rectifier.data.loaders import UtteranceLoader
        from lightning_rectifier.decode import Decoder, DecoderOptions, word_error_rate, write_text

        dm = getattr(trainer, "datamodule", None)
        if not isinstance(dm, AlignedFramesDataModule) or "test" not in dm.stores:
            raise ValueError("DecodeTestSet needs an AlignedFramesDataModule with a test set (data.test_dir)")
        references = dm.data_dir(dm.hparams["test_dir"]).text
        if references is None:
            rank_zero_warn(f"DecodeTestSet: {dm.hparams['test_dir']} has no text file: nothing to score")
            return
        decoder = Decoder(
            self._decoding_graph(trainer, int(pl_module.hparams["num_senones"])),
            DecoderOptions(beam=self.beam, max_active=self.max_active, acoustic_scale=self.acoustic_scale),
        )
        loader = UtteranceLoader(dm.stores["test"], dm.hparams["eval_batch_size"], rank=trainer.global_rank,
                                 world_size=trainer.world_size)  # fmt: skip
        likelihoods: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for batch in loader:
                batch = batch._replace(features=batch.features.to(pl_module.device))
                for scores in pl_module.predict_step(batch, 0):
                    likelihoods[scores.key] = scores.log_likelihoods.numpy()
        hypotheses = decoder.decode_many(likelihoods).text()
        mine = {key: references.get(key, "") for key in hypotheses}
        result = word_error_rate(mine, hypotheses)
        counts = torch.tensor(
            [result.substitutions, result.deletions, result.insertions, result.num_words, result.sentence_errors,
             result.num_sentences], dtype=torch.float64, device=pl_module.device,
        )  # fmt: skip
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
        substitutions, deletions, insertions, words, sentence_errors, sentences = counts.tolist()
        self.last = {
            "test/wer": (substitutions + deletions + insertions) / max(words, 1),
            "test/substitutions": int(substitutions),
            "test/deletions": int(deletions),
            "test/insertions": int(insertions),
            "test/num_words": int(words),
            "test/sentence_error_rate": sentence_errors / max(sentences, 1),
        }
        pl_module.log_dict(self.last, sync_dist=False)  # already summed over processes
        log_dir = trainer.log_dir  # a broadcast under DDP: every process reads it
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            shares: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(shares, hypotheses)  # hyp.txt holds every process's utterances
            hypotheses = {key: text for share in shares for key, text in share.items()}
        if trainer.is_global_zero and not getattr(trainer, "fast_dev_run", False):  # a smoke run writes no files
            out = Path(log_dir or trainer.default_root_dir) / "decode"
            out.mkdir(parents=True, exist_ok=True)
            write_text(out / "hyp.txt", hypotheses)
            wer: dict[str, Any] = {key.split("/")[1]: value for key, value in self.last.items()}
            wer.update(
                data_dir=dm.hparams["test_dir"],
                acoustic_scale=self.acoustic_scale,
                insertion_penalty=self.insertion_penalty,
                checkpoint=trainer.ckpt_path,
            )
            (out / "wer.json").write_text(json.dumps(wer, indent=2) + "\n")
