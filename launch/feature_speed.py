r"""Benchmark: seconds per minute of audio of emobed_jax.features.audio_features.

  python launch/feature_speed.py [--minutes=5]

Writes a synthetic speech-like WAV (features.synthetic_utterance) of
--minutes, extracts the AVEC 2016 audio stream for each variant and both,
and prints a table: seconds, seconds per minute of audio, times real time.
Say how loaded the machine was (the load average is printed) when quoting it.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import _cli  # first: the sys.path guard
from absl import flags

from emobed_jax import features

FLAGS = _cli.script_flags()
_MINUTES = flags.DEFINE_integer("minutes", 5, "Length of the test WAV in minutes.",
                                flag_values=FLAGS)


def main(argv):
  _cli.start(argv, FLAGS)
  import soundfile  # noqa: PLC0415  (optional: the audio extra)
  minutes = _MINUTES.value
  with tempfile.TemporaryDirectory() as d:
    path = Path(d) / "speech.wav"
    sig = features.synthetic_utterance(60.0 * minutes, 16000, seed=1)
    soundfile.write(path, sig, 16000, subtype="PCM_16")
    _cli.say(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    _cli.say("| variants | seconds | s per min of audio | real time |\n|---|---|---|---|")
    for variants in (("arousal",), ("valence",), ("arousal", "valence")):
      t = time.perf_counter()
      x = features.audio_features(path, variants)
      dt = time.perf_counter() - t
      assert x.shape == (features.num_frames(60.0 * minutes), 88 * len(variants)), x.shape
      _cli.say(f"| {'+'.join(variants)} | {dt:.1f} | {dt / minutes:.2f} | "
               f"{60 * minutes / dt:.0f}x |")


if __name__ == "__main__":
  _cli.run_script(main, FLAGS)
