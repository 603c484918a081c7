"""OMG-Emotion audio features (emobed_jax.features.utterance_features) from a
speech-like WAV and from an mp4 made from it with ffmpeg (issue 9, item 2)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import opensmile
import pytest
import soundfile
from emobed_datasets.errors import DataError
from emobed_datasets.omg_emotion import extract, readers

from emobed_jax import features

SECONDS = 2.0
RATE = 16000


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
  """A synthesised speech-like WAV and an mp4 of it (mpeg4 video + ALAC audio)."""
  folder = tmp_path_factory.mktemp("clips")
  wav = folder / "speech.wav"
  soundfile.write(wav, features.synthetic_utterance(SECONDS, RATE, seed=2), RATE,
                  subtype="PCM_16")
  mp4 = folder / "speech.mp4"
  assert shutil.which("ffmpeg"), "these tests need ffmpeg (apt-get install ffmpeg)"
  # ALAC, not AAC: AAC is lossy (and adds encoder delay), so its features would
  # differ by an amount that depends on the encoder; ALAC in mp4 decodes to
  # the very 16-bit samples of the WAV, so the features must be identical.
  subprocess.run(
      ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
       f"color=c=gray:s=32x32:r=10:d={SECONDS}", "-i", str(wav), "-map", "0:v",
       "-map", "1:a", "-c:v", "mpeg4", "-c:a", "alac", "-shortest", str(mp4)], check=True)
  return wav, mp4


@pytest.mark.parametrize("kind, frames, dim, rate", [
    ("egemaps_lld", (190, 200), 25, 100.0),
    ("egemaps_functionals", (9, 11), 88, 10.0),
    ("compare_lld", (190, 200), 65, 100.0),
])
def test_documented_shape_no_nan(clips, kind, frames, dim, rate):
  values, frame_rate, names = features.utterance_features(clips[0], kind)
  assert values.dtype == np.float32 and values.shape[1] == dim
  assert frames[0] <= values.shape[0] <= frames[1]
  assert np.all(np.isfinite(values)) and frame_rate == rate
  assert names == features.utterance_feature_names(kind) and len(names) == dim


def test_lld_are_opensmiles(clips):
  signal, rate = soundfile.read(clips[0], dtype="float32")
  smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                          feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
  want = smile.process_signal(signal, rate)
  got, _, names = features.utterance_features(clips[0])
  np.testing.assert_array_equal(got, want.to_numpy(np.float32))
  assert names == list(want.columns)


@pytest.mark.parametrize("seconds", [0.6, 1.0])
def test_short_utterance_gets_one_functional_vector(seconds):
  x = features.synthetic_utterance(seconds, RATE, seed=1)
  values, _, _ = features.utterance_features((x, RATE), "egemaps_functionals")
  assert values.shape == (1, 88) and np.all(np.isfinite(values))


def test_mp4_gives_the_wavs_features(clips):
  wav, mp4 = clips
  a, _, _ = features.utterance_features(wav)
  b, _, _ = features.utterance_features(mp4)
  np.testing.assert_array_equal(a, b)


def _clip(tmp_path, audio):
  face = tmp_path / "f.csv"
  header = ["frame", "timestamp", "success", *readers.OPENFACE_COLUMNS]
  face.write_text(", ".join(header) + "\n" + ", ".join(["1", "0", "1"] + ["0.5"] * 47) + "\n")
  row = readers.Row(2, "v", "u.mp4", 0.5, 0.0, 4)
  return extract.Clip(row, str(audio), str(face))


def test_missing_ffmpeg_is_a_one_line_error(clips, tmp_path, monkeypatch):
  monkeypatch.setattr(shutil, "which", lambda name: None)
  with pytest.raises(DataError, match=r"speech\.mp4: ffmpeg not found on PATH") as e:
    extract.extract_clip(_clip(tmp_path, clips[1]), "egemaps_lld")
  assert "\n" not in str(e.value)


def test_broken_clip_is_skipped_with_reason(tmp_path):
  broken = tmp_path / "u.mp4"
  broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
  out = extract.extract_clip(_clip(tmp_path, broken), "egemaps_lld")
  assert out["skip"] == extract.UNREADABLE_AUDIO and str(broken) in out["warning"]


def test_egemaps_lld_equal_the_full_configurations_lld_output():
  """The OMG egemaps_lld extractor runs only the components the 25 LLDs
  depend on: names and values equal opensmile's own eGeMAPSv02 LLD output
  (speech-like signal with pauses, digital silence and noise)."""
  from emobed_jax import egemaps
  rng = np.random.default_rng(5)
  x = np.concatenate([features.synthetic_utterance(3.0, RATE, seed=4), np.zeros(RATE // 2),
                      0.05 * rng.standard_normal(RATE // 2), features.synthetic_utterance(
                          1.5, RATE, seed=6)]).astype(np.float32)
  ref = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                        feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
  want = ref.process_signal(x, RATE)
  trimmed = egemaps.lld25_smile()
  got = trimmed.process_signal(x, RATE)
  assert list(got.columns) == list(want.columns) and len(want.columns) == 25
  assert got.shape == want.shape and got.shape[0] > 400
  np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
