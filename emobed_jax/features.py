"""The AVEC 2016 RECOLA audio stream from any WAV file, with openSMILE.

    feats = audio_features("me.wav")                     # [frames, 176] float32
    feats = audio_features("me.wav", ("arousal",))       # [frames, 88]

RECOLA's ``features_audio/{arousal,valence}/<rec>.arff`` (docs/DATA.md) hold
the 88 eGeMAPS (v02) functionals over a *centred* sliding window, 4 s for the
arousal variant and 6 s for the valence variant, one vector every 40 ms, the
first and last vectors repeated where the window would leave the recording;
a recording of ``d`` seconds has ``round(d / 0.04) + 1`` frames (7501 for
5 minutes).  This module computes the same stream.

How (``method="numpy"``, the default): openSMILE (the ``opensmile`` Python
package, 2.6.0) runs the low-level-descriptor (LLD) part of its own
``eGeMAPSv02.conf`` once over the whole signal, returning per 10 ms frame the
36 LLD streams that configuration's functionals read; :mod:`emobed_jax.egemaps`
then forms each window's 88 functionals in vectorised NumPy, both variants
from the same LLDs (in two threads), with openSMILE's algorithms (moments,
percentiles, Peaks2 slopes, segments, equivalent sound level).  Long signals (30 s and
more) are cut in two for the LLD pass, which runs in two threads; each seam is
placed so that the result equals one pass exactly and is checked
(``egemaps.lld_frames``).  ``method="opensmile"`` keeps the earlier way, the
reference: openSMILE's own functionals switched from one vector per file
(``frameMode = full``) to its sliding-window mode (``frameMode = fixed``,
``frameSize = W``, ``frameStep = 0.04``), one full openSMILE pass per
variant.  Window ``k`` covers LLD frames ``[4 k, 4 k + 100 W)``, i.e.
``[0.04 k, 0.04 k + W]`` s, so it is centred on frame ``t = k + W / 0.08``;
frames before the first centre and after the last take the first and last
vectors.

The two methods agree to float32 rounding, all 88 columns
(``tests/test_egemaps_windows.py``, against openSMILE's fixed-mode output
for 4 s, 6 s and the OMG 1 s windows, on speech-like signals with pauses,
digital silence, noise, a steady tone and clipping): the largest relative
difference seen is about 3e-6 (Peaks2 slope means, which openSMILE sums in
float32 and this code in float64), 1e-7 to 5e-7 for means, standard
deviations, segment statistics and the sound level, and 0 for percentiles
and peak counts; every discrete decision (which extrema and segments count)
is openSMILE's.  Windowing itself is openSMILE's: a window's ``*_amean``
equals the mean of the whole signal's LLDs
(``FeatureLevel.LowLevelDescriptors``) over its 400 (4 s) or 600 (6 s) LLD
frames (``tests/test_predict_cli.py``).

Speed (``python launch/feature_speed.py --minutes=5``, a 5-minute 16 kHz
WAV, the shared 2-core development machine at load average 0.7-0.9, whose
speed per CPU second varied by about half between runs): both variants in
3.2-4.9 s (61x-94x real time; 5.7-9.3 CPU s, the NumPy functionals about
0.5-0.8 of them, in two threads), one variant about as long; the
``opensmile`` method took 16.9-20.6 s for both (15x-18x) in the same runs.
With the second core busy the split pass cannot overlap: 5.6 s for both
(54x) at load average 2.3.  The OMG ``egemaps_functionals`` (1 s windows)
use the same code; there openSMILE's own functionals were already cheap, and
the time per utterance is unchanged (about 50 ms for 2 s).

What matches the corpus exactly: the feature names and their order (those of
``opensmile.FeatureSet.eGeMAPSv02`` functionals, which is the order of the
corpus's 88 columns), the window lengths, the 40 ms step, the centring, the
edge repetition and the frame count.  What may differ: the corpus was
computed by the AVEC 2016 organisers with the openSMILE of 2016 and the
eGeMAPS configuration of that time, on the recordings' own audio; the
package does not record the version.  Here it is openSMILE 3 (the Python
package 2.6.0) with eGeMAPS v02, which may differ from it in details, and
the audio is taken at its own sample rate (no resampling), so the same
speech at another sample rate gives somewhat different values.
Check a model trained on the corpus on your audio's feature ranges before
trusting absolute values.

Compared with openSMILE's functionals of the window cut out as a separate
signal (``Smile.process_signal(x[a:b])``), measured on a synthetic
utterance: the means of always-defined LLDs (loudness, MFCCs) differ by
2-3 % of their spread over the windows; over all 88 the median difference
is 0-14 % of the spread and the largest about 2.4 spreads (F0 rising-slope
means, ``stddevNorm`` of voiced-only LLDs, voiced/unvoiced segment
statistics), because an LLD near a window edge sees the neighbouring audio
here (the smoothing, the pitch tracker's Viterbi pass and the segment
boundaries work on the continuous stream, as a sliding window over a
recording does) and silence there.
``tests/test_predict_cli.py`` measures both comparisons.
"""

from __future__ import annotations

import concurrent.futures
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emobed_jax import egemaps

#: Frame step of the RECOLA feature and label streams (seconds).
FRAME_S = 0.04
#: Functional window of each RECOLA audio variant (seconds; docs/DATA.md).
WINDOW_S = {"arousal": 4.0, "valence": 6.0}
#: Width of one variant's vector (eGeMAPSv02 functionals).
NUM_FEATURES = 88
#: The shortest signal accepted (seconds): openSMILE needs a few LLD frames.
MIN_SECONDS = 0.1

INSTALL_HINT = 'pip install -e ".[audio]" (opensmile==2.6.0)'


class AudioError(ValueError):
  """A WAV that cannot be used (missing, corrupt, empty, too short); one line."""


def _opensmile():
  try:
    import opensmile
  except ImportError:
    raise AudioError(f"computing audio features needs the opensmile package: "
                     f"{INSTALL_HINT}") from None
  return opensmile


def num_frames(seconds: float) -> int:
  """Frames of a ``seconds``-long recording at 40 ms: ``round(seconds / 0.04) + 1``."""
  return round(seconds / FRAME_S) + 1


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
  """A WAV file as a mono float32 signal.

  Read with ``soundfile`` (libsndfile, installed with opensmile through
  ``audiofile``): unlike the stdlib ``wave`` module it reads 24-bit and
  32-bit PCM and IEEE float WAVs, and reports truncated or non-WAV files as
  errors instead of returning garbage.

  Args:
    path: a WAV file; any sample rate; 8/16/24/32-bit PCM or 32/64-bit float;
      any number of channels (averaged to mono).

  Returns:
    ``(signal [n] float32 in [-1, 1], sample_rate in Hz)``.

  Raises:
    AudioError: the file is missing, not a readable WAV, empty, shorter than
      :data:`MIN_SECONDS`, or holds NaN or inf.
  """
  path = Path(path)
  try:
    import soundfile
  except ImportError:
    raise AudioError(f"reading WAV files needs soundfile: {INSTALL_HINT}") from None
  if not path.is_file():
    raise AudioError(f"{path}: not found")
  try:
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
  except (RuntimeError, TypeError, ValueError) as e:  # soundfile.LibsndfileError is a RuntimeError
    raise AudioError(f"{path}: not a readable WAV file ({' '.join(str(e).split())})") from None
  if data.shape[0] == 0:
    raise AudioError(f"{path}: the WAV file holds no samples")
  if data.shape[0] < MIN_SECONDS * rate:
    raise AudioError(f"{path}: {data.shape[0] / rate:.3f} s of audio; at least "
                     f"{MIN_SECONDS} s is needed")
  signal = data.mean(axis=1, dtype=np.float32)
  if not np.all(np.isfinite(signal)):
    raise AudioError(f"{path}: the WAV file holds NaN or inf samples")
  return signal, int(rate)


def _smile(window_s: float | None, step_s: float = FRAME_S):
  """An eGeMAPSv02 functionals extractor: sliding ``window_s`` windows every
  ``step_s`` (40 ms), or (None) one vector for the whole signal (openSMILE's
  default)."""
  opensmile = _opensmile()
  if window_s is None:
    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.Functionals)
  conf = Path(opensmile.__file__).parent / "core/config/egemaps/v02/eGeMAPSv02.conf"
  inc = Path(tempfile.gettempdir()) / (
      f"emobed_framemode_{window_s:g}s_{step_s:g}s_{os.getuid()}.conf.inc")
  text = (f"frameMode = fixed\nframeSize = {window_s:g}\nframeStep = {step_s:g}\n"
          "frameCenterSpecial = left\n")
  if not inc.is_file() or inc.read_text() != text:
    tmp = inc.with_name(f"{inc.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, inc)
  return opensmile.Smile(feature_set=str(conf), feature_level="func",
                         options={"frameModeFunctionalsConf": str(inc)})


def feature_names() -> list[str]:
  """The 88 eGeMAPSv02 functional names, in the corpus's column order."""
  return list(_smile(None).feature_names)


#: Ways to compute the windowed functionals: ``"numpy"`` (one openSMILE pass
#: for the LLDs, the windows in NumPy: :mod:`emobed_jax.egemaps`) and
#: ``"opensmile"`` (openSMILE's own sliding-window functionals, one pass per
#: window length: the reference).
METHODS = ("numpy", "opensmile")
#: Threads of the openSMILE LLD pass on long signals (``egemaps.lld_frames``).
LLD_WORKERS = 2


def _int16_range(signal: np.ndarray) -> np.ndarray:
  # opensmile (2.6.0) turns the signal into int16 as ``(x * 32768).astype(int16)``,
  # which wraps around above 32767: clip to the int16 range first (a no-op for
  # PCM WAVs; float WAVs and decoded lossy tracks can reach or pass 1.0).
  return np.clip(np.asarray(signal, np.float32).reshape(-1), -1.0, 32767 / 32768)


def _check_finite(values: np.ndarray, names: Sequence[str], what: str) -> None:
  """AudioError naming the first column with a NaN or inf value (never replaced)."""
  bad = ~np.isfinite(values)
  if bad.any():
    col = int(np.flatnonzero(bad.any(axis=0))[0])
    raise AudioError(f"openSMILE gave NaN or inf {what} values in {names[col]} "
                     f"({int(bad[:, col].sum())} of {values.shape[0]} rows)")


def _recola_streams(signal: np.ndarray, sample_rate: int, windows_s: Sequence[float],
                    method: str) -> list[np.ndarray]:
  """:func:`window_functionals` for several window lengths, one LLD pass."""
  if method not in METHODS:
    raise ValueError(f"method {method!r}: expected one of {METHODS}")
  _opensmile()  # AudioError with the install hint if missing
  signal = _int16_range(signal)
  seconds = signal.size / sample_rate
  if seconds < MIN_SECONDS:
    raise AudioError(f"{seconds:.3f} s of audio; at least {MIN_SECONDS} s is needed")
  frames = num_frames(seconds)
  fits = sorted({w for w in windows_s if seconds >= w})
  found = {}
  if method == "opensmile":
    found = {w: _smile(w).process_signal(signal, sample_rate).to_numpy(np.float32) for w in fits}
  elif fits:  # one LLD pass; each window length's functionals in its own thread
    lld = egemaps.lld_frames(signal, sample_rate, workers=LLD_WORKERS)
    step = round(FRAME_S / egemaps.LLD_STEP_S)
    with concurrent.futures.ThreadPoolExecutor(max(1, min(len(fits), LLD_WORKERS))) as pool:
      found = dict(zip(fits, pool.map(
          lambda w: egemaps.sliding_functionals(lld, round(w / egemaps.LLD_STEP_S), step), fits)))
  whole = None
  out = []
  for window_s in windows_s:
    windows = found.get(window_s, np.zeros((0, NUM_FEATURES), np.float32))
    if windows.shape[0] == 0:  # shorter than one window: the whole signal's functionals
      if whole is None:
        whole = _smile(None).process_signal(signal, sample_rate).to_numpy(np.float32)
      x = np.repeat(whole[:1], frames, axis=0)
    else:
      half = round(window_s / 2 / FRAME_S)
      x = windows[np.clip(np.arange(frames) - half, 0, windows.shape[0] - 1)]
    _check_finite(x, egemaps.FUNCTIONAL_NAMES, f"{window_s:g} s window")
    out.append(x)
  return out


def window_functionals(signal: np.ndarray, sample_rate: int, window_s: float,
                       method: str = "numpy") -> np.ndarray:
  """eGeMAPSv02 functionals over a centred ``window_s`` window every 40 ms.

  Args:
    signal: ``[n]`` mono float samples in [-1, 1] (clipped to openSMILE's
      int16 range).
    sample_rate: Hz (any; openSMILE works at the given rate).
    window_s: window length in seconds (4.0 arousal, 6.0 valence on RECOLA).
    method: ``"numpy"`` (default) or ``"opensmile"`` (:data:`METHODS`; the
      module docstring says how they compare).

  Returns:
    ``[round(n / sample_rate / 0.04) + 1, 88]`` float32; row ``t`` holds the
    functionals of ``[0.04 t - W/2, 0.04 t + W/2]``; rows whose window would
    leave the signal repeat the first / last full window's vector.  A signal
    shorter than the window gets one vector for the whole signal on every row.

  Raises:
    AudioError: opensmile is not installed; the signal is shorter than
      :data:`MIN_SECONDS`; a value is NaN or inf (the column is named; none
      seen so far, and the corpus has none).
    ValueError: an unknown ``method``.
  """
  return _recola_streams(signal, sample_rate, [window_s], method)[0]


def audio_features(wav: str | os.PathLike[str] | tuple[np.ndarray, int],
                   variants: Sequence[str] = ("arousal", "valence"),
                   method: str = "numpy") -> np.ndarray:
  """A WAV's RECOLA audio features, the ``variants`` side by side.

  Args:
    wav: a WAV path (:func:`read_wav`) or ``(signal [n], sample_rate)``.
    variants: ``"arousal"`` (4 s windows) and/or ``"valence"`` (6 s), in
      the order wanted: a run's ``DataConfig.variants()``.
    method: ``"numpy"`` (default: one openSMILE pass serves all variants) or
      ``"opensmile"`` (:func:`window_functionals`).

  Returns:
    ``[frames, 88 * len(variants)]`` float32, ``frames = round(duration /
    0.04) + 1``; columns ``88 i : 88 (i + 1)`` are variant ``i``'s eGeMAPSv02
    functionals in the corpus's column order.

  Raises:
    AudioError: the WAV cannot be read (:func:`read_wav`), opensmile is
      missing, or a value is NaN or inf.
    ValueError: an unknown variant name or method.
  """
  for v in variants:
    if v not in WINDOW_S:
      raise ValueError(f"variant {v!r}: expected one of {sorted(WINDOW_S)}")
  signal, rate = wav if isinstance(wav, tuple) else read_wav(wav)
  return np.concatenate(_recola_streams(signal, rate, [WINDOW_S[v] for v in variants], method),
                        axis=1)


def synthetic_utterance(seconds: float = 7.0, rate: int = 16000, seed: int = 0) -> np.ndarray:
  """A speech-like test signal (no real voice): a harmonic tone whose pitch
  glides around 150 Hz, syllable-like amplitude bursts at 3 Hz, a slow
  loudness swell, and a little noise.  For tests, demos and benchmarks.

  Returns:
    ``[round(seconds * rate)]`` float32 samples in about [-0.5, 0.5].
  """
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * rate)) / rate
  f0 = 150 + 40 * np.sin(2 * np.pi * 0.25 * t) + 15 * np.sin(2 * np.pi * 2.3 * t)
  phase = 2 * np.pi * np.cumsum(f0) / rate
  voiced = sum(np.sin(k * phase) / k for k in range(1, 15))
  syllables = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 0.5
  loud = 0.55 + 0.45 * np.sin(2 * np.pi * 0.15 * t)
  return (0.25 * syllables * loud * voiced / 3 + 0.01 * rng.standard_normal(t.size)
          ).astype(np.float32)


# ---------------------------------------------------------------------------
# OMG-Emotion: per-utterance audio feature sequences (issue 9, item 2)
# ---------------------------------------------------------------------------

#: OMG audio feature choices (``emobed_jax.config.OMG_AUDIO_FEATURES``) ->
#: (openSMILE feature set, level, width).
UTTERANCE_FEATURES = {
    "egemaps_lld": ("eGeMAPSv02", "lld", 25),
    "egemaps_functionals": ("eGeMAPSv02", "func", 88),
    "compare_lld": ("ComParE_2016", "lld", 65),
}
#: Step of openSMILE's low-level descriptors (seconds): 100 frames per second.
LLD_STEP_S = 0.01
#: ``egemaps_functionals``: the 88 functionals over windows of this length...
UTTERANCE_WINDOW_S = 1.0
#: ... every this many seconds (10 vectors per second).
UTTERANCE_HOP_S = 0.1


def utterance_frame_rate(kind: str) -> float:
  """Vectors per second of :func:`utterance_features` ``kind``: 100.0 for the
  LLDs (one every 10 ms), 10.0 for ``egemaps_functionals``.

  Raises:
    ValueError: an unknown ``kind``.
  """
  _check_kind(kind)
  return 1.0 / (UTTERANCE_HOP_S if kind == "egemaps_functionals" else LLD_STEP_S)


def _check_kind(kind: str) -> None:
  if kind not in UTTERANCE_FEATURES:
    raise ValueError(f"audio features {kind!r}: expected one of {sorted(UTTERANCE_FEATURES)}")


_SMILES: dict = {}


def _utterance_smile(kind: str):
  """One openSMILE extractor per kind and process (building one parses its
  configuration, ~50 ms; reused across clips)."""
  if kind not in _SMILES:
    opensmile = _opensmile()
    feature_set, level, _ = UTTERANCE_FEATURES[kind]
    if kind == "egemaps_lld":  # the same 25 LLDs with only the components they need
      _SMILES[kind] = egemaps.lld25_smile()
    elif level == "lld":
      _SMILES[kind] = opensmile.Smile(
          feature_set=getattr(opensmile.FeatureSet, feature_set),
          feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    else:  # openSMILE's own sliding-window functionals (their names; the reference)
      _SMILES[kind] = _smile(UTTERANCE_WINDOW_S, UTTERANCE_HOP_S)
  return _SMILES[kind]


def utterance_feature_names(kind: str = "egemaps_lld") -> list[str]:
  """Column names of :func:`utterance_features` ``kind`` (openSMILE's names,
  e.g. ``'Loudness_sma3'``), in column order."""
  _check_kind(kind)
  return list(_utterance_smile(kind).feature_names)


def decode_sound_track(clip: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
  """The first audio stream of a video clip as a mono float32 signal, via ffmpeg.

  ffmpeg (the Debian package, ``/usr/bin/ffmpeg``) decodes the stream at its
  own sample rate, all channels, to a temporary 32-bit float WAV, which
  :func:`read_wav` reads (averaging the channels): the same samples as a
  lossless WAV of the stream give the same features.

  Returns:
    ``(signal [n] float32, sample_rate in Hz)``.

  Raises:
    FileNotFoundError: ffmpeg is not on ``PATH`` (its ``filename`` is
      ``'ffmpeg'``); callers turn it into their one-line error.
    AudioError: the clip is missing, has no audio stream or cannot be decoded.
  """
  import shutil
  import subprocess

  clip = Path(clip)
  ffmpeg = shutil.which("ffmpeg")
  if ffmpeg is None:
    raise FileNotFoundError(2, "ffmpeg not found on PATH (apt-get install ffmpeg)", "ffmpeg")
  if not clip.is_file():
    raise AudioError(f"{clip}: not found")
  with tempfile.TemporaryDirectory(prefix="emobed_ffmpeg_") as tmp:
    out = Path(tmp) / "track.wav"
    done = subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-i", str(clip), "-vn", "-map", "0:a:0",
         "-c:a", "pcm_f32le", "-f", "wav", str(out)],
        capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.is_file():
      why = " ".join(done.stderr.split())[-300:] or f"exit status {done.returncode}"
      raise AudioError(f"{clip}: ffmpeg could not decode an audio stream ({why})")
    signal, rate = read_wav(out)
  return signal, rate


def utterance_features(
    source: str | os.PathLike[str] | tuple[np.ndarray, int],
    kind: str = "egemaps_lld",
) -> tuple[np.ndarray, float, list[str]]:
  """An utterance's audio feature sequence, computed with openSMILE.

  Kinds (``emobed_jax.config.OMG_AUDIO_FEATURES``):

  * ``egemaps_lld``: the 25 eGeMAPSv02 low-level descriptors, one vector
    every 10 ms (openSMILE's 20 ms / 60 ms analysis frames, smoothed);
  * ``egemaps_functionals``: the 88 eGeMAPSv02 functionals over 1 s windows
    every 100 ms (computed as the RECOLA stream above: one openSMILE LLD pass,
    the windows in NumPy, equal to openSMILE's sliding-window functionals to
    float32 rounding; row ``k`` covers ``[0.1 k, 0.1 k + 1]`` s, no padding); an utterance
    without a full window (shorter than about 1.05 s) gets one vector over the
    whole signal.  1 s holds
    a few syllables (enough for pitch and loudness statistics) and 10 vectors
    per second keep utterances of 1-10 s at 10-100 steps;
  * ``compare_lld``: the 65 ComParE_2016 low-level descriptors every 10 ms.

  Speed (``launch/feature_speed.py --omg``, quiet 2-core machine,
  2026-11-30, CPU seconds per minute of audio): ``egemaps_lld`` 1.01 on a
  whole signal (60x real time per core), 1.28 in 2 s utterances (47x; each
  call builds openSMILE's engine anew, about 8-10 ms); docs/DATA.md.

  Args:
    source: ``(signal [n], sample_rate)``, a WAV file (:func:`read_wav`) or
      any other file ffmpeg can read the sound track of (an mp4 clip,
      :func:`decode_sound_track`); the signal is used at its own sample rate.
    kind: one of the above.

  Returns:
    ``(features [T, D] float32, frame_rate in Hz, names [D])``; D is 25, 88 or
    65; T about ``100 * seconds`` for the LLDs (openSMILE drops the last
    analysis frames that do not fit: 196 for 2 s), about ``(seconds - 1) /
    0.1`` for the functionals (10 for 2 s), at least 1.

  Raises:
    AudioError: unreadable or too short audio (< :data:`MIN_SECONDS`), no
      audio stream, opensmile missing, or openSMILE returned no frame or a
      NaN/inf value (never replaced by a number).
    FileNotFoundError: a non-WAV source needs ffmpeg and it is not installed.
    ValueError: an unknown ``kind``.
  """
  _check_kind(kind)
  if isinstance(source, tuple):
    signal, rate = source
  elif Path(source).suffix.lower() == ".wav":
    signal, rate = read_wav(source)
  else:
    signal, rate = decode_sound_track(source)
  signal = _int16_range(signal)
  seconds = signal.size / rate
  if seconds < MIN_SECONDS:
    raise AudioError(f"{seconds:.3f} s of audio; at least {MIN_SECONDS} s is needed")
  if kind == "egemaps_functionals":  # as the RECOLA stream: one LLD pass, windows in NumPy
    _opensmile()
    values = np.zeros((0, NUM_FEATURES), np.float32)
    if seconds >= UTTERANCE_WINDOW_S:
      lld = egemaps.lld_frames(signal, rate, workers=1)
      values = egemaps.sliding_functionals(lld, round(UTTERANCE_WINDOW_S / LLD_STEP_S),
                                           round(UTTERANCE_HOP_S / LLD_STEP_S))
    if values.shape[0] == 0:  # no full window: one vector over the whole signal
      values = _smile(None).process_signal(signal, rate).to_numpy(np.float32)
    names = list(egemaps.FUNCTIONAL_NAMES)
  else:
    smile = _utterance_smile(kind)
    values = smile.process_signal(signal, rate).to_numpy(np.float32)
    names = list(smile.feature_names)
  if values.shape[0] == 0:
    raise AudioError(f"openSMILE gave no {kind} frame for {seconds:.3f} s of audio")
  _check_finite(values, names, kind)
  return values, utterance_frame_rate(kind), names
