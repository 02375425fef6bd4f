"""The embedded synthetic corpus: labelled chord audio generated on the spot.

Modules, in the order data flows: ``harmony`` (key-aware chord progressions, Harte labels),
``patterns`` (voicings, accompaniment, bass, melody, drums as note events), ``render`` (the
numpy synthesizer), ``gm`` and ``soundfont`` (the same events on sampled General MIDI
instruments), ``song`` (one song: score and audio), ``scores`` (excerpts of music21's real
scores; ``score_labels`` names their chords for analysis), ``holdout`` (works never
rendered), ``presets`` (styles and the presets' sizes),
``corpus`` (files on disk), ``cli`` (``chordkd synth``).

>>> from chordkd.synth import synthesize_song
>>> audio, intervals, labels, meta = synthesize_song(seed=0, index=0, seconds=12)
"""

from chordkd.synth.corpus import make_corpus, make_preset, song_id
from chordkd.synth.harmony import QUALITIES, RARE_QUALITIES, harte_label
from chordkd.synth.presets import PRESETS, STYLES
from chordkd.synth.song import compose_song, synthesize_song

__all__ = [
    "PRESETS", "QUALITIES", "RARE_QUALITIES", "STYLES", "compose_song", "harte_label",
    "make_corpus", "make_preset", "song_id", "synthesize_song",
]
