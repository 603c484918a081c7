"""launch/predict.py, launch/evaluate.py and emobed_jax.features, end to end
with a tiny model trained on the small demo corpus."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
from conftest import REPO_ROOT
from launch_support import FAST, _cli, main_in_process

opensmile = pytest.importorskip("opensmile")
soundfile = pytest.importorskip("soundfile")
pytest.importorskip("matplotlib")

from emobed_datasets import demo
from emobed_datasets.arff import read_arff, write_arff

from emobed_jax import features, metrics, predict


def _load(name):
  spec = importlib.util.spec_from_file_location(f"launch_{name}",
                                                REPO_ROOT / "launch" / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


predict_cli = _load("predict")
evaluate_cli = _load("evaluate")


def _main(mod, name, *args):
  """``launch/<name>.py args`` in this process; its exit status."""
  mod.FLAGS.unparse_flags()
  try:
    mod.main(_cli.parse_flags([f"{name}.py", *args], mod.FLAGS))
    return 0
  except SystemExit as e:
    return e.code


@pytest.fixture(scope="module")
def run(demo_dir, tmp_path_factory):
  """A finished EmoBed audio run (arousal and valence, 176 input columns)."""
  wd = tmp_path_factory.mktemp("predict_cli") / "run"
  assert main_in_process("--flagfile=demo.flags", f"--data_dir={demo_dir}", f"--workdir={wd}",
                         "--epochs=2", *FAST) == 0
  return wd


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
  path = tmp_path_factory.mktemp("wav") / "utterance.wav"
  soundfile.write(path, features.synthetic_utterance(), 16000, subtype="PCM_16")
  return path


def test_features_of_a_wav_shape_frames_no_nan(wav, tmp_path):
  x = features.audio_features(wav)
  assert x.shape == (features.num_frames(7.0), 176) == (176, 176)
  assert x.dtype == np.float32 and np.all(np.isfinite(x))
  assert x[:, :88].std(axis=0).max() > 0  # windows differ over time
  # 24-bit stereo at 44.1 kHz and float at 8 kHz read too (same duration -> same frames)
  sig = features.synthetic_utterance(seconds=4.5, rate=44100)
  soundfile.write(tmp_path / "s24.wav", np.stack([sig, 0.5 * sig], 1), 44100, subtype="PCM_24")
  soundfile.write(tmp_path / "f32.wav", features.synthetic_utterance(4.5, 8000), 8000, subtype="FLOAT")
  for name in ("s24.wav", "f32.wav"):
    y = features.audio_features(tmp_path / name, ("arousal",))
    assert y.shape == (features.num_frames(4.5), 88) and np.all(np.isfinite(y))


def test_windowed_functionals_equal_opensmile_on_the_window(wav):
  """Window k of the sliding mode = openSMILE's functionals of the LLD frames
  [4 k, 4 k + 400) (exact for means); against the window cut out and
  processed as its own signal, a stated tolerance."""
  signal, rate = features.read_wav(wav)
  smile = features._smile(4.0)
  win = smile.process_signal(signal, rate)
  lld = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02,
                        opensmile.FeatureLevel.LowLevelDescriptors).process_signal(signal, rate)
  names = [("loudness_sma3_amean", "Loudness_sma3"), ("mfcc1_sma3_amean", "mfcc1_sma3"),
           ("mfcc3_sma3_amean", "mfcc3_sma3")]
  ref = features._smile(None)
  seg_rel = []
  for k in (0, 30, 70):
    for func, low in names:
      m = lld[low].to_numpy()[4 * k:4 * k + 400].mean()
      np.testing.assert_allclose(win[func].iloc[k], m, rtol=1e-5, atol=1e-6)
    a, b = int(k * 0.04 * rate), int((k * 0.04 + 4.0) * rate)
    seg = ref.process_signal(signal[a:b], rate)
    for func, _ in names:
      # relative to the feature's spread over the windows (mfcc3 is near 0)
      seg_rel.append(abs(win[func].iloc[k] - seg[func].iloc[0]) / win[func].std())
    all88 = np.abs(win.iloc[k].to_numpy() - seg.iloc[0].to_numpy()) / (win.std().to_numpy()
                                                                      + 1e-9)
    print(f"\nwindow {k}: amean functionals vs the window processed separately: "
          f"{max(seg_rel[-3:]):.3f} of their spread over windows; all 88: median "
          f"{np.median(all88):.3f}, max {all88.max():.1f} ({win.columns[all88.argmax()]})")
  assert max(seg_rel) < 0.25
  x = features.window_functionals(signal, rate, 4.0, method="opensmile")
  np.testing.assert_array_equal(x[50], win.to_numpy(np.float32)[0])  # centred: t = k + 50
  np.testing.assert_array_equal(x[0], x[50])  # edges repeated
  np.testing.assert_array_equal(x[-1], win.to_numpy(np.float32)[-1])
  # the default (NumPy) method: the same rows to float32 rounding
  # (tests/test_egemaps_windows.py compares every column)
  y = features.window_functionals(signal, rate, 4.0)
  np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(y[0], y[50])


def test_predict_a_wav_writes_csv_and_png(run, wav, tmp_path, capsys):
  out = tmp_path / "out"
  assert _main(predict_cli, "predict", f"--workdir={run}", f"--input={wav}",
               f"--output={out}") == 0
  o = capsys.readouterr().out
  assert "[1/1] utterance.wav: 176 frames" in o
  lines = (out / "utterance.prediction.csv").read_text().splitlines()
  assert lines[0] == "time_s,arousal,valence" and len(lines) == 177
  assert lines[1].startswith("0.00,") and lines[-1].startswith("7.00,")
  pred = np.loadtxt(out / "utterance.prediction.csv", delimiter=",", skiprows=1)
  ref = predict.load_predictor(run)(features.audio_features(wav))
  np.testing.assert_allclose(pred[:, 1:], ref, atol=1e-6)
  assert (out / "utterance.prediction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert sorted(p.name for p in out.iterdir()) == ["utterance.prediction.csv", "utterance.prediction.png"]


def test_predict_a_corpus_feature_file_matches_the_run(run, demo_dir, tmp_path, capsys):
  manual = demo.demo_paths(demo_dir, 0)[0]
  arousal_file = manual / "features_audio" / "arousal" / "dev_1.arff"
  out = tmp_path / "out"
  assert _main(predict_cli, "predict", f"--workdir={run}", f"--input={arousal_file}",
               f"--output={out}") == 0
  x = np.concatenate([read_arff(manual / "features_audio" / v / "dev_1.arff").data
                      for v in ("arousal", "valence")], 1)
  p = predict.load_predictor(run)(x)
  csv = np.loadtxt(out / "dev_1.prediction.csv", delimiter=",", skiprows=1)
  np.testing.assert_allclose(csv[:, 1:], p, atol=1e-6)
  gold = np.stack([read_arff(manual / "ratings_gold_standard" / d / "dev_1.arff").data[:, 0]
                   for d in ("arousal", "valence")], 1)
  ccc = np.asarray(metrics.ccc_by_recording({"dev_1": p}, {"dev_1": gold},
                                            "per_recording").value)
  results = json.loads((run / "results.json").read_text())
  want = results["per_recording"]["dev_1"]
  np.testing.assert_allclose(ccc, [want["ccc_arousal"], want["ccc_valence"]], atol=1e-5)
  # a folder of them, with a progress line each
  assert _main(predict_cli, "predict", f"--workdir={run}", f"--input={arousal_file.parent}",
               f"--output={tmp_path / 'all'}") == 0
  o = capsys.readouterr().out
  n = len(list(arousal_file.parent.glob("*.arff")))
  assert f"[{n}/{n}]" in o and len(list((tmp_path / "all").glob("*.prediction.csv"))) == n
  # ... predicted together over the devices: each file's CSV as predicted alone
  predictor = predict.load_predictor(run)
  for f in sorted(arousal_file.parent.glob("*.arff")):
    alone = predictor(np.concatenate([read_arff(manual / "features_audio" / v / f.name).data
                                      for v in ("arousal", "valence")], 1))
    got = np.loadtxt(tmp_path / "all" / f"{f.stem}.prediction.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(got[:, 1:], alone, atol=1e-6)
  # The same features as CSV files (';' separated with name and time columns,
  # as AVEC later shipped them): the same predictions.
  csv_dir = tmp_path / "csv" / "features_audio"
  for v in ("arousal", "valence"):
    a = read_arff(manual / "features_audio" / v / "dev_1.arff").data
    (csv_dir / v).mkdir(parents=True)
    lines = ["name;frameTime;" + ";".join(f"f{j}" for j in range(a.shape[1]))]
    lines += [f"'dev_1';{0.04 * i:.2f};" + ";".join(repr(float(x)) for x in row)
              for i, row in enumerate(a)]
    (csv_dir / v / "dev_1.csv").write_text("\n".join(lines) + "\n")
  assert _main(predict_cli, "predict", f"--workdir={run}",
               f"--input={csv_dir / 'arousal' / 'dev_1.csv'}", f"--output={tmp_path / 'c'}") == 0
  np.testing.assert_allclose(np.loadtxt(tmp_path / "c" / "dev_1.prediction.csv", delimiter=",",
                                        skiprows=1)[:, 1:], p, atol=1e-6)


def test_predict_many_spreads_recordings_over_the_devices(run):
  """More recordings than devices, of different lengths: one pmapped call
  per 8 of them; each equals the one-device prediction of it alone."""
  predictor = predict.load_predictor(run)
  rs = np.random.RandomState(0)
  want = predictor.config.core.task.target_dim
  feats = [rs.randn(n, want).astype(np.float32) for n in (40, 7, 40, 40, 7, 7, 40, 7, 40, 40)]
  got = predictor.predict_many(feats)
  assert len(got) == len(feats)
  for x, p in zip(feats, got):
    assert p.shape == (x.shape[0], len(predictor.dimensions)) and p.dtype == np.float32
    np.testing.assert_allclose(p, predictor(x), atol=1e-6)
  bad = feats[:2] + [np.full((4, want), np.nan, np.float32)]
  with pytest.raises(ValueError, match="c.arff: features: NaN"):
    predictor.predict_many(bad, ["a.arff", "b.arff", "c.arff"])


def test_evaluate_reproduces_results_and_writes_test_arffs(run, capsys):
  assert _main(evaluate_cli, "evaluate", f"--workdir={run}") == 0
  results = json.loads((run / "results.json").read_text())
  ev = json.loads((run / "eval_dev.json").read_text())
  for key in ("metrics", "metrics_per_recording_mean", "per_recording", "best_step",
              "selection", "setting", "modality", "eval_split"):
    assert ev[key] == results[key], key
  assert _main(evaluate_cli, "evaluate", f"--workdir={run}", "--split=test") == 0
  assert "prediction files under" in capsys.readouterr().out
  for dim in ("arousal", "valence"):
    table = read_arff(run / "predictions_test" / dim / "test_1.arff")
    assert table.data.shape == (300, 1) and np.all(np.isfinite(table.data))
    np.testing.assert_allclose(table.frame_time, np.arange(300) * 0.04, atol=1e-6)


def _refused(capsys, *args):
  code = _main(predict_cli, "predict", *args)
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 1 and len(err) == 1 and err[0].startswith("error: "), (code, err)
  return err[0]


def test_refusals_are_one_line_and_write_nothing(run, wav, tmp_path, capsys):
  out = tmp_path / "out"
  # a video model given a WAV (a copy of the run whose config says video)
  video = tmp_path / "video_run"
  shutil.copytree(run, video)
  cfg = json.loads((video / "config.json").read_text())
  cfg["data"].update(modality="video", aux_modality="audio")
  (video / "config.json").write_text(json.dumps(cfg))
  e = _refused(capsys, f"--workdir={video}", f"--input={wav}", f"--output={out}")
  assert "WAV" in e and "'video'" in e
  # a corrupt and an empty WAV
  (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk" * 3)
  e = _refused(capsys, f"--workdir={run}", f"--input={tmp_path / 'corrupt.wav'}",
               f"--output={out}")
  assert "not a readable WAV" in e
  soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
  e = _refused(capsys, f"--workdir={run}", f"--input={tmp_path / 'empty.wav'}",
               f"--output={out}")
  assert "no samples" in e
  # a feature file of the wrong width
  for v in ("arousal", "valence"):
    write_arff(tmp_path / "feats" / v / "rec.arff", "x", [f"f{i}" for i in range(10)],
               np.zeros((20, 10)), instance_name="rec")
  e = _refused(capsys, f"--workdir={run}", f"--input={tmp_path / 'feats/arousal/rec.arff'}",
               f"--output={out}")
  assert "20 feature columns" in e and "takes 176" in e
  # a missing workdir (predict and evaluate)
  e = _refused(capsys, f"--workdir={tmp_path / 'nope'}", f"--input={wav}", f"--output={out}")
  assert "not found" in e
  assert _main(evaluate_cli, "evaluate", f"--workdir={tmp_path / 'nope'}") == 1
  assert not out.exists() or not any(out.iterdir())


def test_predictor_error_names_the_layout(run):
  with pytest.raises(ValueError, match=r"\[frames, 176\]: the arousal-variant then the "
                     r"valence-variant audio features of docs/DATA.md side by side"):
    predict.load_predictor(run)(np.zeros((10, 88), np.float32))
