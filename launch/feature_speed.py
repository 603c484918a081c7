r"""Benchmark: seconds per minute of audio of emobed_jax.features.audio_features.

  python launch/feature_speed.py [--minutes=5]
  python launch/feature_speed.py --omg [--minutes=1]   # OMG-Emotion features

--omg measures emobed_jax.features.utterance_features instead (one process):
each OMG audio feature choice on the whole WAV and on the same audio cut into
2 s utterances (as the builder sees them: one call per clip).

Writes a synthetic speech-like WAV (features.synthetic_utterance) of
--minutes, extracts the AVEC 2016 audio stream for each variant and both with
each of --methods (features.METHODS: "numpy", the default, and "opensmile",
openSMILE's own sliding-window functionals, the reference), and prints a
table: wall seconds, seconds per minute of audio, times real time, and the
process's CPU seconds (above the wall time when the openSMILE pass runs in
threads).  Say how loaded the machine was (the load average is printed before
and after) when quoting it: on a shared machine the wall time of the threaded
pass depends on a free second core.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import _cli  # first: the sys.path guard
from absl import flags

import numpy as np

from emobed_jax import features

FLAGS = _cli.script_flags()
_MINUTES = flags.DEFINE_integer("minutes", 5, "Length of the test WAV in minutes.",
                                flag_values=FLAGS)


_METHODS = flags.DEFINE_list("methods", list(features.METHODS),
                             "features.audio_features methods to time.", flag_values=FLAGS)
_OMG = flags.DEFINE_bool("omg", False, "Measure the OMG-Emotion utterance features.",
                        flag_values=FLAGS)


def _omg(path: Path, minutes: float) -> None:
  signal, rate = features.read_wav(path)
  pieces = [signal[i:i + 2 * rate] for i in range(0, signal.size - 2 * rate + 1, 2 * rate)]
  # CPU seconds of this process (openSMILE runs in it) besides wall seconds:
  # on a shared machine the CPU time is the better measure of per-core speed.
  _cli.say("| features | input | wall s | wall s per min of audio | CPU s per min | "
           "real time per core (CPU) |\n|---|---|---|---|---|---|")
  for kind in features.UTTERANCE_FEATURES:
    features.utterance_features((signal[: rate], rate), kind)  # builds the extractor
    for label, inputs in (("whole WAV", [signal]), (f"{len(pieces)} x 2 s", pieces)):
      t, c = time.perf_counter(), time.process_time()
      for x in inputs:
        values, _, _ = features.utterance_features((x, rate), kind)
        assert np.all(np.isfinite(values))
      dt, dc = time.perf_counter() - t, time.process_time() - c
      audio_min = sum(x.size for x in inputs) / rate / 60
      _cli.say(f"| {kind} | {label} | {dt:.2f} | {dt / audio_min:.2f} | "
               f"{dc / audio_min:.2f} | {60 * audio_min / dc:.0f}x |")


def main(argv):
  _cli.start(argv, FLAGS)
  import soundfile  # noqa: PLC0415  (optional: the audio extra)
  minutes = _MINUTES.value
  with tempfile.TemporaryDirectory() as d:
    path = Path(d) / "speech.wav"
    sig = features.synthetic_utterance(60.0 * minutes, 16000, seed=1)
    soundfile.write(path, sig, 16000, subtype="PCM_16")
    _cli.say(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if _OMG.value:
      _omg(path, minutes)
      _cli.say(f"load average after: {os.getloadavg()[0]:.2f}")
      return
    _cli.say("| method | variants | wall s | s per min of audio | real time | CPU s |\n"
             "|---|---|---|---|---|---|")
    for method in _METHODS.value:
      features.audio_features((sig[:16000 * 7], 16000), ("arousal",), method)  # extractors built
      for variants in (("arousal",), ("valence",), ("arousal", "valence")):
        t, c = time.perf_counter(), time.process_time()
        x = features.audio_features(path, variants, method)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        assert x.shape == (features.num_frames(60.0 * minutes), 88 * len(variants)), x.shape
        _cli.say(f"| {method} | {'+'.join(variants)} | {dt:.1f} | {dt / minutes:.2f} | "
                 f"{60 * minutes / dt:.0f}x | {dc:.1f} |")
    _cli.say(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  _cli.run_script(main, FLAGS)
