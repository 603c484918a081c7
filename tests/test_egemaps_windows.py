"""emobed_jax.egemaps: the NumPy sliding-window eGeMAPSv02 functionals against
openSMILE's own fixed-mode functionals (features._smile), all 88 columns, and
the split LLD pass against one pass (issue 13, item 1)."""

from __future__ import annotations

import numpy as np
import pytest
from emobed_datasets import demo_omg
from scipy.signal import resample_poly

from emobed_jax import egemaps, features

RATE = 16000


def _tone(seconds: float, f0: float = 180.0) -> np.ndarray:
  """A steady harmonic vowel-like tone (voiced throughout)."""
  t = np.arange(int(seconds * RATE)) / RATE
  phase = 2 * np.pi * np.cumsum(f0 + 10 * np.sin(2 * np.pi * 0.3 * t)) / RATE
  return (0.2 * sum(np.sin(k * phase) / k for k in range(1, 10))).astype(np.float32)


def _hard_signal() -> np.ndarray:
  """Speech-like stretches, 4.5 s of digital silence (constant LLDs, windows
  without a voiced frame or a local extremum), low noise, a steady tone,
  quiet speech, a short gap and clipped loud speech: about 17 s."""
  rng = np.random.default_rng(4)
  speech = features.synthetic_utterance
  return np.concatenate([
      speech(3.5, RATE, 1), np.zeros(int(4.5 * RATE), np.float32),
      0.003 * rng.standard_normal(int(2 * RATE)).astype(np.float32), _tone(1.5),
      0.2 * speech(2.5, RATE, 2), np.zeros(int(0.05 * RATE), np.float32),
      np.clip(3 * speech(3.0, RATE, 3), -0.9, 0.9)]).astype(np.float32)


def _demo_voices() -> np.ndarray:
  """One OMG demo voice per class (tests' demo_omg generator), 0.3 s pauses."""
  rng = np.random.default_rng(7)
  parts = []
  for label in range(len(demo_omg.AUDIO_CUES)):
    parts += [demo_omg._voice(rng, label, 2.2, rng.uniform(100, 220)),
              0.005 * rng.standard_normal(int(0.3 * RATE))]
  return np.concatenate(parts).astype(np.float32)


SIGNALS = {"synthetic": lambda: features.synthetic_utterance(9.0, RATE, 5),
           "hard": _hard_signal, "demo_voices": _demo_voices}


@pytest.fixture(scope="module", params=sorted(SIGNALS))
def signal_and_lld(request):
  x = SIGNALS[request.param]()
  return request.param, x, egemaps.lld_frames(x, RATE, workers=1)


def test_names_are_opensmiles():
  assert list(egemaps.FUNCTIONAL_NAMES) == features.feature_names()
  assert egemaps._lld_smile().feature_names == list(egemaps.LLD_NAMES)


def _assert_matches(got: np.ndarray, want: np.ndarray, what: str) -> dict[str, float]:
  """Equal to float32 rounding: rtol 1e-4 plus 1e-6 of each column's spread
  over the windows.  Returns the largest relative difference per group."""
  assert got.shape == want.shape, (what, got.shape, want.shape)
  assert np.all(np.isfinite(want)), what
  spread = want.std(axis=0)
  bad = ~np.isclose(got, want, rtol=1e-4, atol=0) & (np.abs(got - want) > 1e-6 * spread)
  names = egemaps.FUNCTIONAL_NAMES
  msg = [f"{names[j]}: {bad[:, j].sum()} windows, first {np.flatnonzero(bad[:, j])[0]}: "
         f"{got[bad[:, j], j][0]} vs openSMILE {want[bad[:, j], j][0]}"
         for j in np.flatnonzero(bad.any(0))]
  assert not msg, f"{what}: " + "; ".join(msg)
  rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-30)
  return {g: float(rel[:, [j for j, n in enumerate(names) if key(n)]].max())
          for g, key in _GROUPS.items()}


_GROUPS = {
    "amean": lambda n: n.endswith("_amean"), "stddevNorm": lambda n: n.endswith("stddevNorm"),
    "percentiles": lambda n: "pctl" in n or "percentile" in n,
    "slopes": lambda n: "Slope" in n, "peaks/s": lambda n: n == "loudnessPeaksPerSec",
    "segments": lambda n: "Segment" in n, "leq": lambda n: n.startswith("equivalent")}


@pytest.mark.parametrize("window_s", [4.0, 6.0])
def test_all_88_equal_opensmile_fixed_mode(signal_and_lld, window_s):
  name, x, lld = signal_and_lld
  want = features._smile(window_s).process_signal(x, RATE).to_numpy(np.float32)
  got = egemaps.sliding_functionals(lld, round(window_s * 100), 4)
  assert got.shape[0] > 20
  worst = _assert_matches(got, want, f"{name}, {window_s:g} s")
  print(f"\n{name} {window_s:g} s: largest relative difference per group "
        + ", ".join(f"{g} {v:.1e}" for g, v in worst.items()))
  if name == "hard":  # the edge cases the signal is there for occur
    col = {n: i for i, n in enumerate(egemaps.FUNCTIONAL_NAMES)}
    assert np.any(want[:, col["F0semitoneFrom27.5Hz_sma3nz_amean"]] == 0)  # no voiced frame
    if window_s == 4.0:  # a window inside the silence: constant loudness
      assert np.any(want[:, col["loudness_sma3_stddevNorm"]] == 0)
    assert np.any(want[:, col["StddevVoicedSegmentLengthSec"]] > 0)


@pytest.mark.parametrize("kind", ["noise", "zeros", "dc", "tone"])
def test_degenerate_signals_equal_opensmile(kind):
  """No voiced frame at all (noise), constant LLDs (digital silence, DC), no
  unvoiced frame (a steady tone): 7 s, 4 s windows."""
  n = 7 * RATE
  x = {"noise": lambda: 0.05 * np.random.default_rng(0).standard_normal(n),
       "zeros": lambda: np.zeros(n), "dc": lambda: np.full(n, 0.1),
       "tone": lambda: _tone(7.0)}[kind]().astype(np.float32)
  want = features._smile(4.0).process_signal(x, RATE).to_numpy(np.float32)
  _assert_matches(egemaps.sliding_functionals(egemaps.lld_frames(x, RATE), 400, 4), want, kind)


@pytest.mark.parametrize("rate, up, down", [(8000, 1, 2), (22050, 441, 320), (44100, 441, 160)])
def test_other_sample_rates_equal_opensmile(rate, up, down):
  """openSMILE works at the signal's own rate; the LLD frames stay 10 ms."""
  x = resample_poly(_demo_voices()[: 7 * RATE], up, down).astype(np.float32)
  want = features._smile(4.0).process_signal(x, rate).to_numpy(np.float32)
  got = egemaps.sliding_functionals(egemaps.lld_frames(x, rate), 400, 4)
  _assert_matches(got, want, f"{rate} Hz")


def test_chunks_of_windows_give_the_same(signal_and_lld, monkeypatch):
  _, _, lld = signal_and_lld
  whole = egemaps.sliding_functionals(lld, 400, 4)
  monkeypatch.setattr(egemaps, "_CHUNK", 37)
  np.testing.assert_allclose(egemaps.sliding_functionals(lld, 400, 4), whole, rtol=1e-6, atol=1e-7)


def test_omg_one_second_windows_equal_opensmile():
  """utterance_features' egemaps_functionals: 1 s windows every 100 ms."""
  x = _demo_voices()[: 5 * RATE]
  got, rate, names = features.utterance_features((x, RATE), "egemaps_functionals")
  want = features._smile(1.0, 0.1).process_signal(x, RATE).to_numpy(np.float32)
  assert rate == 10.0 and names == list(egemaps.FUNCTIONAL_NAMES)
  _assert_matches(got, want, "OMG 1 s / 100 ms")


def test_window_functionals_methods_agree():
  x = _hard_signal()[: 9 * RATE]
  a = features.audio_features((x, RATE))
  b = features.audio_features((x, RATE), method="opensmile")
  assert a.shape == b.shape == (features.num_frames(9.0), 176)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="method 'fast'"):
    features.window_functionals(x, RATE, 4.0, method="fast")


def test_nan_is_an_error_naming_the_column(monkeypatch):
  real = egemaps.lld_frames

  def nan_loudness(signal, rate, workers=2):
    lld = real(signal, rate, workers)
    lld[100:110, egemaps.LLD_NAMES.index(egemaps.LOUDNESS)] = np.nan
    return lld

  monkeypatch.setattr(egemaps, "lld_frames", nan_loudness)
  with pytest.raises(features.AudioError, match=r"NaN or inf .*loudness_sma3_amean"):
    features.window_functionals(features.synthetic_utterance(6.0, RATE), RATE, 4.0)


@pytest.fixture
def split_spy(monkeypatch):
  """Split from 0 s on; records the length (s) of each openSMILE pass."""
  monkeypatch.setattr(egemaps, "SPLIT_MIN_S", 0.0)
  calls = []
  real = egemaps._lld_pass

  def spy(signal, rate):
    calls.append(signal.size / rate)
    return real(signal, rate)

  monkeypatch.setattr(egemaps, "_lld_pass", spy)
  return calls, real


@pytest.mark.parametrize("workers", [2, 3])
def test_split_pass_equals_one_pass(split_spy, workers):
  calls, one_pass = split_spy
  x = np.concatenate([_hard_signal(), _demo_voices()])  # about 35 s
  want = one_pass(x, RATE)
  got = egemaps.lld_frames(x, RATE, workers=workers)
  assert len(calls) == workers  # split, and no seam check failed
  np.testing.assert_array_equal(got, want)


def test_split_inside_a_long_vowel_falls_back_to_one_pass(split_spy):
  """A seam inside 20 s of sustained voicing: the pieces disagree before the
  seam (jitter and shimmer carry state through voicing), so one pass runs."""
  calls, one_pass = split_spy
  x = np.concatenate([features.synthetic_utterance(2.0, RATE, 1), _tone(20.0),
                      features.synthetic_utterance(2.0, RATE, 2)])
  got = egemaps.lld_frames(x, RATE, workers=2)
  assert len(calls) == 3 and calls[-1] == pytest.approx(x.size / RATE)
  np.testing.assert_array_equal(got, one_pass(x, RATE))
