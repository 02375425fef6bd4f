"""Frozen encoders compared by shallow probes (``chordkd probe``).

:mod:`.encoders` turns an encoder spec into a cached embedding per song (the embeddings cache
of :mod:`chordkd.labelling.embeddings`); :mod:`.tasks` derives each task's targets from the
corpus metadata and its fixed held-out split by song; :mod:`.probes` trains the linear and
one-hidden-layer MLP probes with one recipe; :mod:`.report` writes the tables and heatmap;
:mod:`.probe` is the command.
"""
