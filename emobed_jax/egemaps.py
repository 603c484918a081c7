"""eGeMAPSv02 functionals over sliding windows, in NumPy, from one openSMILE pass.

    lld = lld_frames(signal, rate)                    # [frames, 36] float32, 10 ms
    x4 = sliding_functionals(lld, 400, 4)             # [windows, 88]: 4 s every 40 ms
    x6 = sliding_functionals(lld, 600, 4)             # 6 s windows from the same LLDs

openSMILE's ``eGeMAPSv02.conf`` computes the 88 functionals with its
``cFunctionals`` components from a handful of low-level descriptor (LLD)
streams, 10 ms apart.  :func:`lld_frames` runs the LLD part of that
configuration once (its own include files, less the components whose output
nothing reads) and returns, per 10 ms frame, exactly the values those
components read
(:data:`LLD_NAMES`: the smoothed log F0, loudness, the spectral and MFCC
streams, their voiced-only and unvoiced-only selections with 0 elsewhere, and
the frame energy behind the equivalent sound level).  :func:`sliding_functionals`
then forms, for every window of ``window_frames`` LLD frames starting at
multiples of ``step_frames``, what openSMILE's ``frameMode = fixed``
functionals give for the same window: one LLD pass serves any number of
window lengths.

The algorithms follow openSMILE 3's functional components (the ``opensmile``
2.6.0 package's binary), with its float32 arithmetic where it decides
something discrete:

* Moments (``amean``, ``stddevNorm`` in its compatible form ``stddev / mean``,
  ``mean == 0`` giving ``stddev``), over the non-zero frames for the
  ``*_sma3nz`` streams (``nonZeroFuncts = 1``); a window without any gives 0.
* Percentiles 20/50/80 with linear interpolation and the 20-80 range.
* Peaks2 rising/falling slopes (relative threshold 0.1 of the window's range,
  its three pruning passes over the local minima and maxima, slopes in units
  per second including the start and end pseudo-extrema) and the loudness
  peaks per second; for F0 over the voiced frames only, as openSMILE does.
* Segments: ``nonX`` (voiced segments per second, mean and standard
  deviation of their lengths) and ``eqX`` (unvoiced lengths) on F0 with
  ``X = 0``, minimum segment 3 frames, minimum pause 2 frames.
* The equivalent sound level ``10 log10`` of the mean frame energy (floor
  1e-12).

Vectorised over windows: window sums from cumulative sums (float64; a
window whose variance is too small for that, e.g. in digital silence, is
summed directly), one sort per window for percentiles, the segment
statistics from the signal's voiced "islands" clipped to each window, and the
peak pruning with loop-free passes except one loop over each window's k-th
running-maximum update, for all windows at once.
``tests/test_egemaps_windows.py`` compares every column with openSMILE's own
fixed-mode output (4 s, 6 s and 1 s windows; speech-like signals, silence,
noise, DC, tones, clipping, 8-44.1 kHz), and 85 random signals assembled from
such pieces matched too: the largest relative difference seen is about 3e-6
(Peaks2 slope means), 1e-7 to 5e-7 elsewhere, 0 for percentiles and peak
counts.  Those differences come from sums of many terms (means, slope means,
deviations) formed here in float64 where openSMILE accumulates some in
float32; the discrete decisions (which extrema and segments count) use
float32 as openSMILE does and agree.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path

import numpy as np

#: LLD frame period (seconds): openSMILE's 10 ms frame step.
LLD_STEP_S = 0.01

#: The LLD streams the eGeMAPSv02 functionals read, as openSMILE names them,
#: in the column order of :func:`lld_frames`.
F0 = "F0semitoneFrom27.5Hz_sma3nz"
LOUDNESS = "loudness_sma3"
MEAN_STDDEV = ("spectralFlux_sma3", "mfcc1_sma3", "mfcc2_sma3", "mfcc3_sma3", "mfcc4_sma3")
UNVOICED = ("alphaRatioUV_sma3nz", "hammarbergIndexUV_sma3nz", "slopeUV0-500_sma3nz",
            "slopeUV500-1500_sma3nz", "spectralFluxUV_sma3nz")
VOICED = ("jitterLocal_sma3nz", "shimmerLocaldB_sma3nz", "HNRdBACF_sma3nz",
          "logRelF0-H1-H2_sma3nz", "logRelF0-H1-A3_sma3nz", "F1frequency_sma3nz",
          "F1bandwidth_sma3nz", "F1amplitudeLogRelF0_sma3nz", "F2frequency_sma3nz",
          "F2bandwidth_sma3nz", "F2amplitudeLogRelF0_sma3nz", "F3frequency_sma3nz",
          "F3bandwidth_sma3nz", "F3amplitudeLogRelF0_sma3nz", "alphaRatioV_sma3nz",
          "hammarbergIndexV_sma3nz", "slopeV0-500_sma3nz", "slopeV500-1500_sma3nz",
          "spectralFluxV_sma3nz", "mfcc1V_sma3nz", "mfcc2V_sma3nz", "mfcc3V_sma3nz",
          "mfcc4V_sma3nz")
ENERGY = "pcm_SQUAREDenergy"
LLD_NAMES = (F0, LOUDNESS, *MEAN_STDDEV, *UNVOICED, *VOICED, ENERGY)

#: The openSMILE data-memory levels holding :data:`LLD_NAMES`, in that order.
LLD_LEVELS = ("gemapsv01b_lld_single_logF0_smo", "gemapsv01b_loudness_smo",
              "egemapsv02_lldSetNoF0AndLoudnessZ_smo", "egemapsv02_lldSetSpectralZ_smo",
              "egemapsv02_lldSetNoF0AndLoudnessNz_smo", "egemapsv02_lldSetSpectralNz_smo",
              "egemapsv02_energyRMS")

_SLOPES = ("meanRisingSlope", "stddevRisingSlope", "meanFallingSlope", "stddevFallingSlope")
_CONTOUR = ("amean", "stddevNorm", "percentile20.0", "percentile50.0", "percentile80.0",
            "pctlrange0-2", *_SLOPES)
#: The 88 output names, in openSMILE's (and the RECOLA corpus's) column order.
FUNCTIONAL_NAMES = (
    *(f"{F0}_{f}" for f in _CONTOUR), *(f"{LOUDNESS}_{f}" for f in _CONTOUR),
    *(f"{n}_{f}" for n in (*MEAN_STDDEV, *VOICED) for f in ("amean", "stddevNorm")),
    *(f"{n}_amean" for n in UNVOICED),
    "loudnessPeaksPerSec", "VoicedSegmentsPerSec", "MeanVoicedSegmentLengthSec",
    "StddevVoicedSegmentLengthSec", "MeanUnvoicedSegmentLength", "StddevUnvoicedSegmentLength",
    "equivalentSoundLevel_dBp")

_T = np.float32(LLD_STEP_S)  # openSMILE's input period, as the float32 it computes with
_REL_THRESH = np.float32(0.1)  # Peaks2.relThresh
_SEG_MIN, _PAUSE_MIN = 3, 2  # cFunctionalSegments segMinLng, pauseMinLng (defaults)
_LOG_FLOOR = np.float32(1e-12)  # cVectorOperation logfloor (dBp)


# ---------------------------------------------------------------------------
# the LLD pass
# ---------------------------------------------------------------------------

# The LLD part of eGeMAPSv02.conf: its two LLD include files, less every
# component whose output the levels read (LLD_LEVELS) do not depend on
# (GeMAPSv01b's selections and smoothers, eGeMAPSv02's LLD-output sets:
# 16 components, about 9 % of the pass; found by _needed), and the F0 and
# loudness smoothers, which sit in GeMAPSv01b's functionals include (the
# same two sections).
_LLD_INCLUDES = ("gemaps/v01b/GeMAPSv01b_core.lld.conf.inc", "egemaps/v02/eGeMAPSv02_core.lld.conf.inc")
# The head of both configurations below: memory, source, the two (trimmed)
# LLD include files.
_CONFIG_HEAD = """\
[componentInstances:cComponentManager]
instance[dataMemory].type=cDataMemory
printLevelStats=0

\\{{\\cm[source{{?}}:include external source]}}
\\{{{include0}}}
\\{{{include1}}}

"""
_CONFIG = _CONFIG_HEAD + """\
[componentInstances:cComponentManager]
instance[gemapsv01b_smoF0].type=cContourSmoother
instance[gemapsv01b_smoLoudness].type=cContourSmoother

[gemapsv01b_smoF0:cContourSmoother]
reader.dmLevel = gemapsv01b_lld_single_logF0
writer.dmLevel = gemapsv01b_lld_single_logF0_smo
copyInputName = 1
nameAppend = sma3nz
noPostEOIprocessing = 0
smaWin = 3
noZeroSma = 1

[gemapsv01b_smoLoudness:cContourSmoother]
reader.dmLevel = gemapsv01b_loudness
writer.dmLevel = gemapsv01b_loudness_smo
nameAppend = sma3
copyInputName = 1
noPostEOIprocessing = 0
smaWin = 3
noZeroSma = 0

\\{{\\cm[sink{{?}}:include external sink]}}
"""


def _write_if_changed(path: Path, text: str) -> None:
  if not path.is_file() or path.read_text() != text:
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _lld_config(root: Path) -> Path:
  """The LLD configuration (:data:`_CONFIG`) written to the temp folder."""
  return _write_config(root, _CONFIG, set(LLD_LEVELS), "emobed_egemaps_lld")


# The 25 eGeMAPSv02 LLDs every 10 ms (``FeatureLevel.LowLevelDescriptors``,
# the OMG ``egemaps_lld`` features) from the same two include files, keeping
# only the components those 25 depend on: eGeMAPSv02.conf also runs the
# functionals' voiced/unvoiced selections and smoothers, the sound-level
# energy and the functionals themselves (which buffer the whole signal),
# none of which the LLD output reads.
_LLD25_CONFIG = _CONFIG_HEAD + """\
[componentInstances:cComponentManager]
instance[lldconcat].type=cVectorConcat

[lldconcat:cVectorConcat]
reader.dmLevel = egemapsv02_lldsetE_smo;egemapsv02_lldsetF_smo
writer.dmLevel = lld
includeSingleElementFields = 1

\\{{\\cm[sink{{?}}:include external sink]}}
"""
_READER = re.compile(r"^\s*\w*reader\.dmLevel\s*=\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)
_WRITER = re.compile(r"^\s*writer\.dmLevel\s*=\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)


def _components(text: str) -> dict[str, tuple[set[str], set[str]]]:
  """``{component: (levels read, levels written)}`` of an openSMILE config
  text (its ``[name:cType]`` sections)."""
  out = {}
  parts = re.split(r"^\[([^\]:]+):(c\w+)\]\s*$", text, flags=re.MULTILINE)
  for name, kind, body in zip(parts[1::3], parts[2::3], parts[3::3]):
    def levels(rx):
      return {v.strip() for m in rx.findall(body) for v in m.split(";") if v.strip()}
    if kind != "cComponentManager":  # the instance lists, not a component
      out[name.strip()] = (levels(_READER), levels(_WRITER))
  return out


def _needed(components: dict[str, tuple[set[str], set[str]]], levels: set[str]) -> set[str]:
  """The components whose output ``levels`` depend on (transitively)."""
  need, todo = set(), set(levels)
  while todo:
    level = todo.pop()
    for name, (reads, writes) in components.items():
      if level in writes and name not in need:
        need.add(name)
        todo |= reads
  return need


def _lld25_config(root: Path) -> Path:
  """The configuration of the 25 eGeMAPSv02 LLDs (:data:`_LLD25_CONFIG`)
  written to the temp folder."""
  return _write_config(root, _LLD25_CONFIG,
                       {"egemapsv02_lldsetE_smo", "egemapsv02_lldsetF_smo"},
                       "emobed_egemaps_lld25")


def _write_config(root: Path, template: str, levels: set[str], stem: str) -> Path:
  """``template`` with copies of the two LLD include files that keep only
  the components ``levels`` depend on (through the includes and the
  template's own sections: :func:`_needed`), written to the temp folder
  (``<stem>_<uid>.conf`` and its includes).

  Raises:
    RuntimeError: the include files do not have the components every
      eGeMAPS LLD set needs (another openSMILE configuration layout).
  """
  folder = Path(tempfile.gettempdir())
  # One set of files per opensmile install (the includes name its folder).
  stem = f"{stem}_{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"
  texts = [(root / name).read_text().replace("../../shared/", f"{root}/shared/")
           for name in _LLD_INCLUDES]
  components = _components("\n".join(texts) + template)
  need = _needed(components, levels)
  if not {"gemapsv01b_pitchJitter", "gemapsv01b_formantLpc", "gemapsv01b_shs"} <= need:
    raise RuntimeError(f"openSMILE's eGeMAPSv02 LLD includes in {root}: unexpected "
                       f"component graph (kept {sorted(need)})")
  includes = []
  for name, text in zip(_LLD_INCLUDES, texts):
    for component in set(components) - need:
      text = re.sub(rf"^instance\[{re.escape(component)}\]\.type\s*=.*$", "", text,
                    flags=re.MULTILINE)
    path = folder / f"{stem}_{Path(name).name}.{os.getuid()}"
    _write_if_changed(path, text)
    includes.append(path)
  conf = folder / f"{stem}_{os.getuid()}.conf"
  _write_if_changed(conf, template.format(include0=includes[0], include1=includes[1]))
  return conf


def lld25_smile():
  """An openSMILE extractor of the 25 eGeMAPSv02 LLDs every 10 ms: the
  values and names of ``opensmile.Smile(eGeMAPSv02, LowLevelDescriptors)``
  (tested equal) with only the components they depend on (a new extractor
  each call; build one per process and reuse it).

  Raises:
    ImportError: opensmile is not installed.
    RuntimeError: the installed opensmile's configuration files are not the
      ones this was written against.
  """
  import opensmile  # optional: the audio extra
  conf = _lld25_config(Path(opensmile.__file__).parent / "core/config")
  return opensmile.Smile(feature_set=str(conf), feature_level="lld")


_LLD_SMILE = None
_LOCK = threading.Lock()


def _lld_smile():
  """The openSMILE extractor of :data:`LLD_LEVELS` (one per process; its
  configuration is written once to the temp folder)."""
  global _LLD_SMILE
  with _LOCK:
    if _LLD_SMILE is None:
      import opensmile  # optional: the audio extra
      conf = _lld_config(Path(opensmile.__file__).parent / "core/config")
      smile = opensmile.Smile(feature_set=str(conf), feature_level=";".join(LLD_LEVELS))
      if tuple(smile.feature_names) != LLD_NAMES:
        raise RuntimeError(f"openSMILE LLD streams {smile.feature_names}: expected {LLD_NAMES}")
      _LLD_SMILE = smile
  return _LLD_SMILE


def _lld_pass(signal: np.ndarray, sample_rate: int) -> np.ndarray:
  """One openSMILE run: ``[frames, 36]`` float32.  Frame ``i`` starts at
  sample ``i * sample_rate / 100``; the frame count is that of the shortest
  level (the 60 ms F0 frames, plus the smoother's end frame)."""
  return np.ascontiguousarray(_lld_smile()(signal, sample_rate)[0].T, dtype=np.float32)


#: Signals shorter than this (seconds) are processed in one piece.
SPLIT_MIN_S = 30.0
#: A piece starts at the quietest 10 ms of this range before its seam (s).
SEAM_SEARCH_S = (2.0, 6.0)
#: A piece runs on for this long after its seam (s).
SEAM_END_S = 1.0
#: Frames before a seam that both pieces must give identically (s).
SEAM_CHECK_S = 1.0


def _split_plan(signal: np.ndarray, hop: int, workers: int):
  """``[(start, seam, stop)]`` per piece, in 10 ms frames: the piece is run
  over frames ``[start, stop)`` of the signal and keeps ``[seam, next seam)``."""
  frames = signal.size // hop
  seams = [round(frames * i / workers) for i in range(workers + 1)]
  near, far = round(SEAM_SEARCH_S[0] * 100), round(SEAM_SEARCH_S[1] * 100)
  plan = []
  for i in range(workers):
    start = 0
    if i > 0:
      lo, hi = max(seams[i] - far, 0), seams[i] - near
      blocks = signal[lo * hop:hi * hop].astype(np.float64).reshape(hi - lo, hop)
      start = lo + int(np.argmin(np.einsum("ij,ij->i", blocks, blocks)))
    stop = None if i + 1 == workers else seams[i + 1] + round(SEAM_END_S * 100)
    plan.append((start, seams[i], stop))
  return plan


def lld_frames(signal: np.ndarray, sample_rate: int, workers: int = 2) -> np.ndarray:
  """The 10 ms LLD frames of :data:`LLD_NAMES`, ``[frames, 36]`` float32.

  With ``workers > 1``, a signal of at least :data:`SPLIT_MIN_S` seconds and
  a sample rate that is a multiple of 100 Hz, the signal is cut into
  ``workers`` pieces on the 10 ms frame grid, openSMILE runs on them in
  threads (its C code releases the GIL), and each piece keeps the frames
  from its seam to the next.  So that the frames after a seam are those of
  one pass over the whole signal, each piece starts earlier, at the quietest
  10 ms between 6 and 2 s before its seam (:data:`SEAM_SEARCH_S`), and runs
  on 1 s past the next seam.  Where a piece starts matters because some
  LLDs carry state from frame to frame (the pitch tracker's smoothing, and
  jitter and shimmer through a voiced stretch: a piece started inside a
  sustained vowel differs from one pass until that vowel ends); from a pause
  on, the pieces give the one-pass frames exactly (measured on speech-like
  signals with pauses, noise, tones and clipping: no difference at any
  seam).  Measured with a fixed margin instead (a piece started that long
  before its seam; seams every 0.23 s of a 28 s test signal): 0.25 s, 0.5 s
  and 1 s left differences in jitter and shimmer only, up to 0.1 % and 1.5 %
  of their spread (F0, whose Viterbi smoothing converges within 0.25 s, and
  all other streams identical), 2 s and 3 s none; a piece's end needs no
  margin beyond 0.5 s (none measured).  Each seam is checked: the two pieces
  must give identical frames for the :data:`SEAM_CHECK_S` seconds before
  it, otherwise the signal is run again in one pass (tested with a seam
  inside 20 s of sustained voicing).
  """
  signal = np.asarray(signal, np.float32).reshape(-1)
  hop = sample_rate // 100
  seconds = signal.size / sample_rate
  workers = min(workers, int(seconds // 10))  # pieces of at least 10 s
  if workers <= 1 or seconds < SPLIT_MIN_S or hop * 100 != sample_rate:
    return _lld_pass(signal, sample_rate)
  plan = _split_plan(signal, hop, workers)
  pieces = [signal[a * hop:None if b is None else b * hop] for a, _, b in plan]
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    out = list(pool.map(lambda piece: _lld_pass(piece, sample_rate), pieces))
  check = round(SEAM_CHECK_S * 100)
  for i in range(1, workers):
    (a0, _, _), (a1, seam, _) = plan[i - 1], plan[i]
    if not np.array_equal(out[i - 1][seam - check - a0:seam - a0],
                          out[i][seam - check - a1:seam - a1]):
      return _lld_pass(signal, sample_rate)
  ends = [seam for _, seam, _ in plan[1:]] + [None]
  return np.concatenate([o[seam - a:None if e is None else e - a]
                         for o, (a, seam, _), e in zip(out, plan, ends)], axis=0)


# ---------------------------------------------------------------------------
# windowed functionals
# ---------------------------------------------------------------------------


def num_windows(frames: int, window_frames: int, step_frames: int) -> int:
  """Windows openSMILE's fixed frame mode gives for ``frames`` LLD frames."""
  return 0 if frames < window_frames else (frames - window_frames) // step_frames + 1


def _window_sums(x: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
  """Sums of ``x[s : s + length]`` (axis 0) for each start, in float64."""
  c = np.zeros((x.shape[0] + 1, *x.shape[1:]), np.float64)
  np.cumsum(x, axis=0, dtype=np.float64, out=c[1:])
  return c[starts + length] - c[starts]


def _moments(x: np.ndarray, starts: np.ndarray, length: int, nonzero: bool):
  """``amean`` and ``stddevNorm`` (openSMILE's compatible form) of the columns
  of ``x [frames, k]`` over each window; with ``nonzero``, of the non-zero
  values only (0 and 0 where there are none).  ``[windows, k]`` each.

  Window sums come from float64 cumulative sums of the deviations from each
  column's overall mean; where a window's variance is too small for that to
  be accurate to about 1e-6 (a constant stretch, e.g. digital silence, where
  openSMILE gives exactly 0), it is recomputed from the window's values.
  """
  x64 = x.astype(np.float64)
  if nonzero:
    mask = x != 0
    count = _window_sums(mask.astype(np.float64), starts, length)
    centre = np.divide(x64.sum(0), mask.sum(0), out=np.zeros(x.shape[1]), where=mask.any(0))
    d = np.where(mask, x64 - centre, 0.0)
  else:
    count = np.full((starts.size, x.shape[1]), float(length))
    centre = x64.mean(0)
    d = x64 - centre
  c1 = np.zeros((x.shape[0] + 1, x.shape[1]))
  c2 = np.zeros((x.shape[0] + 1, x.shape[1]))
  np.cumsum(d, axis=0, out=c1[1:])
  np.cumsum(d * d, axis=0, out=c2[1:])
  s1 = c1[starts + length] - c1[starts]
  s2 = c2[starts + length] - c2[starts]
  n = np.maximum(count, 1.0)
  mean32 = (centre + s1 / n).astype(np.float32)  # openSMILE: float32(double sum / N)
  dm = mean32.astype(np.float64) - centre
  m2 = (s2 - 2.0 * dm * s1) / n + dm * dm
  # rounding of the cumulative sums: about 1e-16 of their size at the window
  scale = (c2[starts + length] + 2.0 * np.abs(dm) * np.abs(c1).max(0)) / n
  redo = np.argwhere((m2 < 1e-10 * scale) & (count > 1))
  for i in range(0, redo.shape[0], 2048):  # [pairs, length] at a time
    w, k = redo[i:i + 2048, 0], redo[i:i + 2048, 1]
    vals = x64[starts[w, None] + np.arange(length), k[:, None]]
    use = vals != 0 if nonzero else np.ones(vals.shape, bool)
    mean32[w, k] = (vals.sum(1, where=use) / count[w, k]).astype(np.float32)
    dev = vals - mean32[w, k].astype(np.float64)[:, None]
    m2[w, k] = np.sum(dev * dev, axis=1, where=use) / count[w, k]
  m2 = np.maximum(m2, 0.0)
  m2[count <= 1] = 0.0
  mean64 = mean32.astype(np.float64)
  sd_norm = np.sqrt(m2) / np.where(mean64 == 0.0, 1.0, mean64)
  sd_norm[m2 <= 0.0] = 0.0
  mean32[count == 0] = 0.0
  sd_norm[count == 0] = 0.0
  return mean32, sd_norm.astype(np.float32)


def _sorted_windows(x: np.ndarray, starts: np.ndarray, length: int, nonzero: bool):
  """Each window's values sorted ascending, ``[windows, length]``, and the
  number of values used (non-zero ones first when ``nonzero``)."""
  view = np.lib.stride_tricks.sliding_window_view(x, length)[starts]
  if nonzero:
    view = np.where(view != 0, view, np.float32(np.inf))
    count = np.count_nonzero(view != np.inf, axis=1)
  else:
    count = np.full(starts.size, length)
  return np.sort(view, axis=1), count


def _percentiles(sorted_: np.ndarray, count: np.ndarray) -> np.ndarray:
  """openSMILE's interpolated percentiles 20/50/80 and the 20-80 range,
  ``[windows, 4]`` float32 (0 where ``count`` is 0)."""
  rows = np.arange(sorted_.shape[0])
  out = np.zeros((sorted_.shape[0], 4), np.float32)
  n = np.maximum(count, 1)
  for k, p in enumerate((0.2, 0.5, 0.8)):
    idx = p * (n - 1).astype(np.float64)
    i1 = np.floor(idx).astype(np.int64)
    i2 = np.ceil(idx).astype(np.int64)
    w1 = (idx - i1).astype(np.float32)
    w2 = (i2 - idx).astype(np.float32)
    a, b = sorted_[rows, i1], sorted_[rows, i2]
    with np.errstate(invalid="ignore"):  # rows without values (inf) are zeroed below
      out[:, k] = np.where(i1 == i2, a, a * w2 + b * w1)
  out[count == 0] = 0.0
  out[:, 3] = np.abs(out[:, 2] - out[:, 0])
  return out


def _ffill_prev(mask: np.ndarray) -> np.ndarray:
  """For each grid cell, the column index of the last ``mask`` cell strictly
  before it in its row, or -1."""
  out = np.full(mask.shape, -1)
  if mask.shape[1] > 1:
    idx = np.where(mask[:, :-1], np.arange(mask.shape[1] - 1), -1)
    out[:, 1:] = np.maximum.accumulate(idx, axis=1)
  return out


def _take_prev(values: np.ndarray, prev: np.ndarray, first: np.ndarray) -> np.ndarray:
  """``values[row, prev]`` where ``prev >= 0``, else ``first[row]``."""
  got = np.take_along_axis(values, np.maximum(prev, 0), axis=1)
  return np.where(prev >= 0, got, first[:, None])


def _scatter(shape, rows, cols, values, fill):
  """An array of ``shape`` filled with ``fill``, ``values`` at ``(rows, cols)``."""
  out = np.full(shape, fill, dtype=np.asarray(values).dtype)
  out[rows, cols] = values
  return out


def _peaks2(x: np.ndarray, starts: np.ndarray, counts: np.ndarray, lo: np.ndarray,
            hi: np.ndarray):
  """openSMILE's Peaks2 over ``x[s : s + n]`` for each window ``(s, n)``.

  Args:
    x: ``[frames]`` float32 contour.
    starts, counts: ``[windows]`` first frame and length of each window.
    lo, hi: ``[windows]`` float32 minimum and maximum of each window.

  Returns:
    ``(peaks [windows] int, slopes [windows, 4] float32)``: the number of
    maxima kept, and the mean and standard deviation of the rising and of the
    falling slopes (per second).
  """
  nw = starts.size
  x = np.asarray(x, np.float32)
  # step 1: all strict local maxima and minima at positions 2 .. n-3 of a window
  inner = np.arange(1, x.size - 1)
  is_max = (x[1:-1] > x[:-2]) & (x[1:-1] > x[2:])
  is_min = (x[1:-1] < x[:-2]) & (x[1:-1] < x[2:])
  ext = inner[is_max | is_min]
  ext_max = is_max[ext - 1]
  a = np.searchsorted(ext, starts + 2)
  b = np.searchsorted(ext, starts + counts - 2)
  k = np.maximum(b - a, 0)
  kmax = int(k.max()) if nw else 0
  valid = np.arange(kmax) < k[:, None]
  cell = np.minimum(a[:, None] + np.arange(kmax), max(ext.size - 1, 0))
  y = x[ext][cell] if ext.size else np.zeros((nw, kmax), np.float32)
  mx = (ext_max[cell] if ext.size else np.zeros((nw, kmax), bool)) & valid
  mn = ~mx & valid
  first = x[np.minimum(starts, x.size - 1)] if x.size else np.zeros(nw, np.float32)
  last = x[np.clip(starts + counts - 1, 0, max(x.size - 1, 0))] if x.size else first
  thr = _REL_THRESH * (hi - lo)  # float32, as absThresh = relThresh * range
  # step 2a: drop maxima that rise less than thr, keeping the local-global one
  last_val = np.concatenate([first[:, None], y[:, :-1]], axis=1)
  small = np.abs(y - last_val) < thr[:, None]
  sig_min = mn & ~small
  last_min = _take_prev(y, _ffill_prev(sig_min), first)
  big_max = mx & ~small
  drop1 = mx & small & ((y - last_min) < thr[:, None])
  cand = mx & small & ~drop1
  min_flag = _ffill_prev(sig_min) > _ffill_prev(big_max | cand)
  removed = drop1.copy()
  # The rest of step 2a is sequential through each window's maxima that set or
  # test the running maximum (big_max, cand): run it over the k-th such event
  # of every window at once, windows ordered by their event count so that
  # those with a k-th event are a prefix.
  event = big_max | cand
  n_ev = event.sum(axis=1)
  order = np.argsort(-n_ev, kind="stable")
  ev_row, ev_col = np.nonzero(event[order])  # rows in `order` positions, columns ascending
  ev_k = np.arange(ev_row.size) - np.repeat(np.cumsum(n_ev[order]) - n_ev[order], n_ev[order])
  kmax_ev = int(n_ev.max()) if nw else 0
  win, shape = order[ev_row], (nw, kmax_ev)
  e_y = _scatter(shape, ev_row, ev_k, y[win, ev_col].astype(np.float64), 0.0)
  e_cand = _scatter(shape, ev_row, ev_k, cand[win, ev_col], False)
  e_flag = _scatter(shape, ev_row, ev_k, min_flag[win, ev_col], False)
  e_col = _scatter(shape, ev_row, ev_k, ev_col, -1)
  sorted_neg = -n_ev[order]  # ascending
  e_drop = np.zeros((nw, kmax_ev), bool)
  last_max = first[order].astype(np.float64)
  ptr = np.full(nw, -1)
  undo_row, undo_col = [], []  # maxima replaced by a higher one later
  for k in range(kmax_ev):
    n = int(np.searchsorted(sorted_neg, -k))  # the windows with more than k events
    yk, ck, fk, jk = e_y[:n, k], e_cand[:n, k], e_flag[:n, k], e_col[:n, k]
    lm, pk = last_max[:n], ptr[:n]
    rec = ck & (yk > lm * 1.05)  # float * 1.05 is a double product in C
    r = np.flatnonzero(rec & (pk >= 0))
    undo_row.append(r)
    undo_col.append(pk[r])
    keep = ck & ~rec
    e_drop[:n, k] = keep & ~fk
    now = ~ck | rec | (keep & fk)
    last_max[:n] = np.where(now, yk, lm)
    ptr[:n] = np.where(now, jk, pk)
  if kmax_ev:
    removed[order[np.concatenate(undo_row)], np.concatenate(undo_col)] = True
    dr, dk = np.nonzero(e_drop)
    removed[order[dr], e_col[dr, dk]] = True
  kept = valid & ~removed
  # step 2b: drop minima less than thr below the preceding kept maximum
  prev_max = _take_prev(y, _ffill_prev(kept & mx), first)
  kept &= ~(mn & ((prev_max - y) < thr[:, None]))
  # step 3: of consecutive maxima keep the (first) highest, of minima the lowest
  flat = np.flatnonzero(kept)
  row = flat // max(kmax, 1)
  t = mx.reshape(-1)[flat]
  new_run = np.ones(flat.size, bool)
  new_run[1:] = (row[1:] != row[:-1]) | (t[1:] != t[:-1])
  run = np.cumsum(new_run) - 1
  key = np.where(t, -y.reshape(-1)[flat], y.reshape(-1)[flat])
  run_starts = np.flatnonzero(new_run)
  best = np.minimum.reduceat(key, run_starts) if flat.size else key
  eq = key == best[run]
  ceq = np.cumsum(eq)
  before = np.concatenate([[0], ceq])[run_starts][run]
  win = eq & (ceq - before == 1)
  flat, row, t = flat[win], row[win], t[win]
  yv = y.reshape(-1)[flat]
  xv = ext[a[row] + flat % max(kmax, 1)] - starts[row]  # positions within the window
  # slopes between consecutive extrema, from (0, first value) to (n - 1, last value)
  same = np.zeros(flat.size, bool)
  same[1:] = row[1:] == row[:-1]
  py = np.where(same, np.roll(yv, 1), first[row])
  px = np.where(same, np.roll(xv, 1), 0)
  dt = (xv - px).astype(np.float32) * _T
  slope = np.where(t, yv - py, py - yv) / dt
  peaks = np.bincount(row[t], minlength=nw)
  n_rise = np.bincount(row[t], minlength=nw)
  n_fall = np.bincount(row[~t], minlength=nw)
  # (np.bincount of no values is an int array even with weights: make it float)
  s_rise = np.bincount(row[t], slope[t], minlength=nw).astype(np.float64)
  s_fall = np.bincount(row[~t], slope[~t], minlength=nw).astype(np.float64)
  has = np.zeros(nw, bool)
  has[row] = True
  row_last = np.ones(flat.size, bool)
  row_last[:-1] = ~same[1:]
  end_idx = np.flatnonzero(row_last)  # the last extremum of each window
  er, et = row[end_idx], t[end_idx]
  end_slope = ((last[er] - yv[end_idx])
               / ((counts[er] - 1 - xv[end_idx]).astype(np.float32) * _T)).astype(np.float64)
  np.add.at(s_fall, er[et], end_slope[et])  # after a maximum the end is a falling slope
  np.add.at(n_fall, er[et], 1)
  np.add.at(s_rise, er[~et], end_slope[~et])
  np.add.at(n_rise, er[~et], 1)
  # no extremum at all: one slope from the first to the last value, per frame
  none = ~has & (counts > 0)
  flat_slope = np.where(none, (last - first) / np.maximum(counts, 1).astype(np.float32), 0)
  rise0, fall0 = none & (flat_slope > 0), none & (flat_slope < 0)
  s_rise[rise0], n_rise[rise0] = flat_slope[rise0], 1
  s_fall[fall0], n_fall[fall0] = flat_slope[fall0], 1
  m_rise = (s_rise / np.maximum(n_rise, 1)).astype(np.float32)
  m_fall = (s_fall / np.maximum(n_fall, 1)).astype(np.float32)
  dev = (slope - np.where(t, m_rise[row], m_fall[row])).astype(np.float64) ** 2
  v_rise = np.bincount(row[t], dev[t], minlength=nw).astype(np.float64) / np.maximum(n_rise, 1)
  v_fall = np.bincount(row[~t], dev[~t], minlength=nw).astype(np.float64) / np.maximum(n_fall, 1)
  slopes = np.stack([m_rise, np.sqrt(v_rise), m_fall, np.sqrt(v_fall)], axis=1)
  slopes[counts == 0] = 0.0
  return peaks, slopes.astype(np.float32)


def _segments(on: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
  """openSMILE's Segments over the frames where ``on`` holds (``nonX`` for
  ``on = F0 != 0``, ``eqX`` for ``on = F0 == 0``), for each window.

  Within a window a segment is a run of ``on`` frames in which gaps of a
  single frame are bridged (a pause is at least 2 frames) and that holds at
  least 3 ``on`` frames; its length is last minus first ``on`` frame index.

  Returns:
    ``[windows, 3]`` float32: segments per second, mean and standard deviation
    of the segment lengths in seconds.
  """
  p = np.flatnonzero(on)
  nw = starts.size
  if p.size == 0:
    return np.zeros((nw, 3), np.float32)
  island = np.concatenate([[0], np.cumsum(np.diff(p) > _PAUSE_MIN)])
  bounds = np.flatnonzero(np.diff(island)) + 1
  i_start = np.concatenate([[0], bounds])  # index into p of each island's first frame
  i_end = np.concatenate([bounds, [p.size]])
  lo = np.searchsorted(p, starts)
  hi = np.searchsorted(p, starts + length)
  empty = hi <= lo
  first_i = island[np.minimum(lo, p.size - 1)]
  last_i = island[np.maximum(hi - 1, 0)]

  def clipped(i):  # the island's on-frames inside the window: count and length
    s = np.maximum(i_start[i], lo)
    e = np.minimum(i_end[i], hi)
    n = e - s
    ln = np.where(n > 0, p[np.minimum(e - 1, p.size - 1)] - p[np.minimum(s, p.size - 1)], 0)
    return n >= _SEG_MIN, ln

  full = (i_end - i_start) >= _SEG_MIN
  ln_all = p[i_end - 1] - p[i_start]
  cnt = np.concatenate([[0], np.cumsum(full)])
  s1 = np.concatenate([[0], np.cumsum(np.where(full, ln_all, 0))])
  s2 = np.concatenate([[0], np.cumsum(np.where(full, ln_all, 0).astype(np.float64) ** 2)])
  mid_a, mid_b = first_i + 1, np.maximum(last_i, first_i + 1)  # islands strictly inside
  n_seg = (cnt[mid_b] - cnt[mid_a]).astype(np.float64)
  sum1 = (s1[mid_b] - s1[mid_a]).astype(np.float64)
  sum2 = s2[mid_b] - s2[mid_a]
  ok, ln = clipped(first_i)
  n_seg += ok
  sum1 += np.where(ok, ln, 0)
  sum2 += np.where(ok, ln, 0).astype(np.float64) ** 2
  two = last_i != first_i
  ok, ln = clipped(last_i)
  ok &= two
  n_seg += ok
  sum1 += np.where(ok, ln, 0)
  sum2 += np.where(ok, ln, 0).astype(np.float64) ** 2
  n_seg[empty], sum1[empty], sum2[empty] = 0, 0, 0
  mean = np.divide(sum1.astype(np.float32), np.maximum(n_seg, 1).astype(np.float32))
  m = mean.astype(np.float64)
  var = np.maximum(sum2 - 2 * m * sum1 + n_seg * m * m, 0.0) / np.maximum(n_seg, 1)
  dev = np.where(n_seg > 1, np.sqrt(var), 0.0).astype(np.float32)
  per_s = n_seg.astype(np.float32) / (_T * np.float32(length))
  return np.stack([per_s, mean * _T, dev * _T], axis=1)


def sliding_functionals(lld: np.ndarray, window_frames: int, step_frames: int) -> np.ndarray:
  """The 88 eGeMAPSv02 functionals of LLD windows, as openSMILE's fixed mode.

  Args:
    lld: ``[frames, 36]`` float32 from :func:`lld_frames`.
    window_frames: LLD frames per window (400 for 4 s).
    step_frames: LLD frames between window starts (4 for 40 ms).

  Returns:
    ``[num_windows(frames, window_frames, step_frames), 88]`` float32 in
    :data:`FUNCTIONAL_NAMES` order; window ``k`` covers LLD frames
    ``[k * step_frames, k * step_frames + window_frames)``.
  """
  lld = np.asarray(lld, np.float32)
  if lld.ndim != 2 or lld.shape[1] != len(LLD_NAMES):
    raise ValueError(f"LLD frames of shape {lld.shape}: expected [frames, {len(LLD_NAMES)}]")
  nw = num_windows(lld.shape[0], window_frames, step_frames)
  # windows are independent: bounded memory (the Peaks2 grids are windows x
  # extrema) in chunks of _CHUNK windows (8 min of audio at a 40 ms step)
  parts = [_functionals(lld[k * step_frames:(min(k + _CHUNK, nw) - 1) * step_frames
                            + window_frames], window_frames, step_frames)
           for k in range(0, nw, _CHUNK)]
  return np.concatenate(parts) if parts else np.zeros((0, len(FUNCTIONAL_NAMES)), np.float32)


_CHUNK = 12000


def _functionals(lld: np.ndarray, length: int, step_frames: int) -> np.ndarray:
  """:func:`sliding_functionals` of one chunk."""
  nw = num_windows(lld.shape[0], length, step_frames)
  starts = np.arange(nw) * step_frames
  out = np.zeros((nw, len(FUNCTIONAL_NAMES)), np.float32)
  col = {name: i for i, name in enumerate(LLD_NAMES)}
  f0, loud = lld[:, col[F0]], lld[:, col[LOUDNESS]]
  voiced = f0 != 0
  # F0 and loudness: moments, percentiles, slopes
  for base, x, nonzero in ((0, f0, True), (10, loud, False)):
    mean, sd = _moments(x[:, None], starts, length, nonzero)
    out[:, base], out[:, base + 1] = mean[:, 0], sd[:, 0]
    sorted_, count = _sorted_windows(x, starts, length, nonzero)
    out[:, base + 2:base + 6] = _percentiles(sorted_, count)
    rows = np.arange(nw)
    lo = np.where(count > 0, sorted_[:, 0], 0).astype(np.float32)
    hi = np.where(count > 0, sorted_[rows, np.maximum(count - 1, 0)], 0).astype(np.float32)
    if nonzero:  # over the voiced frames only, as one contour
      before = np.concatenate([[0], np.cumsum(voiced)])
      peaks, slopes = _peaks2(x[voiced], before[starts], count, lo, hi)
    else:
      peaks, slopes = _peaks2(x, starts, count, lo, hi)
      loud_peaks = peaks
    out[:, base + 6:base + 10] = slopes
  # the other streams: moments
  names = MEAN_STDDEV + VOICED
  for group, nonzero in ((MEAN_STDDEV, False), (VOICED, True)):
    idx = [col[n] for n in group]
    mean, sd = _moments(lld[:, idx], starts, length, nonzero)
    for i, n in enumerate(group):
      k = 20 + 2 * names.index(n)
      out[:, k], out[:, k + 1] = mean[:, i], sd[:, i]
  mean, _ = _moments(lld[:, [col[n] for n in UNVOICED]], starts, length, True)
  k = 20 + 2 * len(names)
  out[:, k:k + len(UNVOICED)] = mean
  k += len(UNVOICED)
  out[:, k] = loud_peaks.astype(np.float32) / (np.float32(length) * _T)
  out[:, k + 1:k + 4] = _segments(voiced, starts, length)
  out[:, k + 4:k + 6] = _segments(~voiced, starts, length)[:, 1:]
  energy, _ = _moments(lld[:, [col[ENERGY]]], starts, length, False)
  out[:, k + 6] = np.float32(10.0 / np.log(10.0)) * np.log(np.maximum(energy[:, 0], _LOG_FLOOR))
  return out
