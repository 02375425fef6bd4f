"""Self-supervised pre-training of the students' encoders on unlabelled audio.

``chordkd pretrain experiments/ssl.yaml`` (contrastive) or ``experiments/ssl_masked.yaml``
(masked prediction of CQT frames): :mod:`.augment` draws chord-preserving views,
:mod:`.objectives` holds one LightningModule per objective, :mod:`.data` serves windows of
unlabelled audio and :mod:`.pretrain` runs an experiment with ``chordkd fit``'s run folders,
resume and W&B. The checkpoints load as ``init=`` (encoder only; the classifier starts fresh)
and as probe encoders (``chordkd probe``).
"""
