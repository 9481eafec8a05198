"""From audio to a Kaldi data directory with frame labels: the pipeline before the data layer.

* :mod:`~lightning_rectifier.frontend.audio`: reading ``wav.scp`` (with ``segments``) or a folder of audio files;
* :mod:`~lightning_rectifier.frontend.features`: Kaldi-compatible MFCC and fbank (torchaudio's Kaldi compliance);
* :mod:`~lightning_rectifier.frontend.prepare`: :func:`prepare_data_dir`, audio -> ``feats.scp``, ``cmvn.scp`` and the
  usual tables;
* :mod:`~lightning_rectifier.frontend.align`: forced alignment with pocketsphinx -> ``ali.ark`` (pdf-ids per frame).

Everything here writes what Kaldi writes, so the data layer (:mod:`lightning_rectifier.data`) reads it as it reads a
Kaldi recipe's output. Submodules are imported on use (they import torch and torchaudio).
"""
