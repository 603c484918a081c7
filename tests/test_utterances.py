"""Utterance mode (OMG-Emotion): length buckets, padded batches, masks, scores."""

import collections
import functools

import jax
import numpy as np
import pytest

from emobed_jax import config as C
from emobed_jax import evaluate, train, utterances
from emobed_jax.utterances import Utterance
from tests_support import small_config, synthetic_batch

pytestmark = pytest.mark.usefixtures("fast_compile")


def _corpus(n=23, seed=0, aux=True):
  rs = np.random.RandomState(seed)
  out = []
  for i in range(n):
    t, ta = rs.randint(3, 40), rs.randint(2, 15)
    am = (rs.rand(ta) > 0.3).astype(np.float32)
    am[0] = 1.0
    out.append(Utterance(
        f"video_{i % 5}/utterance_{i}.mp4", rs.randn(t, 5).astype(np.float32),
        np.ones(t, np.float32), rs.randn(ta, 7).astype(np.float32) if aux else None,
        am if aux else None, int(rs.randint(0, 7)), rs.rand(2).astype(np.float32)))
  return out


def test_every_utterance_once_per_epoch_in_an_order_fixed_by_seed_and_step():
  utts = _corpus()
  b = utterances.UtteranceBatches(utts, 4, seed=3, num_buckets=3, task="classification")
  sizes = collections.Counter(b.bucket.tolist())
  assert b.steps_per_epoch == sum(-(-s // 4) for s in sizes.values())
  again = utterances.UtteranceBatches(utts, 4, seed=3, num_buckets=3, task="classification")
  for epoch in range(2):
    seen = []
    for step in range(epoch * b.steps_per_epoch, (epoch + 1) * b.steps_per_epoch):
      batch = b[step]
      np.testing.assert_array_equal(batch["target"], again[step]["target"])  # pure in (seed, step)
      tt, ta = batch["target"].shape[1], batch["aux"].shape[1]
      assert (tt, ta) in b.shapes
      for row in range(4):
        n = int(batch["mask"][row].sum())
        if n == 0:  # an empty row completing the bucket's last batch
          assert not batch["aux_mask"][row].any() and not batch["target"][row].any()
          continue
        hit = [i for i, u in enumerate(utts) if u.num_frames == n
               and np.array_equal(u.target, batch["target"][row, :n])]
        assert len(hit) == 1
        u = utts[hit[0]]
        assert batch["labels"][row] == u.label
        np.testing.assert_array_equal(batch["aux"][row, :u.aux.shape[0]], u.aux)
        np.testing.assert_array_equal(batch["aux_mask"][row, :u.aux.shape[0]], u.aux_mask)
        assert not batch["aux_mask"][row, u.aux.shape[0]:].any()
        assert not batch["target"][row, n:].any()
        seen.append(hit[0])
    assert sorted(seen) == list(range(len(utts)))
  first = [b[s]["target"].shape for s in range(b.steps_per_epoch)]
  other = utterances.UtteranceBatches(utts, 4, seed=4, num_buckets=3, task="classification")
  assert first != [other[s]["target"].shape for s in range(b.steps_per_epoch)] or not all(
      np.array_equal(b[s]["target"], other[s]["target"]) for s in range(b.steps_per_epoch))


def test_processes_share_each_global_batch():
  utts = _corpus()
  whole = utterances.UtteranceBatches(utts, 4, 0, 2, "regression")
  parts = [utterances.UtteranceBatches(utts, 4, 0, 2, "regression", p, 2) for p in range(2)]
  for step in range(whole.steps_per_epoch + 1):
    w = whole[step]
    got = [p[step] for p in parts]
    for key in w:
      np.testing.assert_array_equal(w[key][:2], got[0][key])
      np.testing.assert_array_equal(w[key][2:], got[1][key])
    assert w["labels"].shape == (4, 2)


def test_buckets_bound_padding():
  utts = _corpus(40)
  bucket, shapes = utterances.length_buckets(utts, 4)
  assert len(shapes) == 4 and np.bincount(bucket).tolist() == [10, 10, 10, 10]
  for i, u in enumerate(utts):
    assert u.num_frames <= shapes[bucket[i]][0] and u.aux.shape[0] <= shapes[bucket[i]][1]
  assert [s[0] for s in shapes] == sorted(s[0] for s in shapes)


def test_standardisation_uses_real_frames_only():
  utts = _corpus(9)
  st = utterances.fit_standardizer(utts)
  real = np.concatenate([u.aux[u.aux_mask > 0] for u in utts]).astype(np.float64)
  np.testing.assert_allclose(st.mean["aux"], real.mean(0), rtol=1e-12)
  np.testing.assert_allclose(st.std["aux"], real.std(0), rtol=1e-12)
  u = utterances.standardize(utts[0], st)
  assert not u.aux[u.aux_mask == 0].any()
  np.testing.assert_allclose(u.aux[u.aux_mask > 0],
                             (utts[0].aux[utts[0].aux_mask > 0] - real.mean(0)) / real.std(0),
                             rtol=1e-5)


def test_class_weights_are_inverse_frequency():
  utts = _corpus(10)
  for u, y in zip(utts, [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]):
    u.label = y
  w = utterances.class_weights(utts, 4)
  np.testing.assert_allclose(w, [10 / (4 * 4), 10 / (4 * 2), 10 / (4 * 4), 0.0])
  assert utterances.majority_class(utts, 4) == 0


@pytest.mark.parametrize("task,level", [("classification", "utterance"),
                                        ("regression", "utterance")])
def test_masked_auxiliary_frames_change_nothing(task, level):
  """Frames of the auxiliary modality under aux_mask == 0 (no face, padding)
  do not reach any loss term."""
  cfg = small_config("emobed", task, level, mining="batch_all")
  model, state = train.create_train_state(cfg, jax.random.key(0))
  batch = synthetic_batch(1, 6, 16, task, aux_len=9, level=level)
  edges = np.quantile(batch["labels"], [1 / 3, 2 / 3], axis=0).T if task == "regression" else None
  f = jax.jit(functools.partial(train.compute_losses, model=model, config=cfg, bin_edges=edges,
                                axis_name=None, train=False))
  total, parts = f(state.params, batch, jax.random.key(0))
  noisy = dict(batch, aux=np.where(batch["aux_mask"][..., None] > 0, batch["aux"], 1e3))
  total2, parts2 = f(state.params, noisy, jax.random.key(0))
  assert float(parts[2]) > 0 and np.isfinite(float(total))
  np.testing.assert_allclose([float(total2), *map(float, parts2)],
                             [float(total), *map(float, parts)], rtol=1e-5)


def test_utterance_scores_match_a_hand_count():
  utts = _corpus(13, aux=False)
  logits = np.random.RandomState(0).randn(13, 7).astype(np.float32)

  def p_eval(params, target, mask):  # a fake model: the logits of each row's utterance
    flat = target.reshape((-1,) + target.shape[2:])
    rows = [next((i for i, u in enumerate(utts) if u.num_frames == int(m.sum())
                  and np.array_equal(u.target, x[:u.num_frames])), None)
            for x, m in zip(flat, mask.reshape(-1, mask.shape[-1]))]
    out = np.stack([logits[r] if r is not None else np.zeros(7, np.float32) for r in rows])
    return out.reshape(target.shape[:2] + (7,))
  cfg = C.RunConfig(data=C.DataConfig(dataset="demo_omg", length_buckets=3)).validate()
  cfg = cfg.__class__(core=cfg.core.replace(task=dict(task="classification", level="utterance",
                                                      num_outputs=7)), data=cfg.data)
  got = evaluate.evaluate_utterances(p_eval, None, utts, cfg, num_devices=4)
  y = np.array([u.label for u in utts])
  p = logits.argmax(1)
  assert got["metrics"]["accuracy"] == pytest.approx(np.mean(p == y))
  recalls = [np.mean(p[y == c] == c) for c in range(7) if np.any(y == c)]
  assert got["metrics"]["uar"] == pytest.approx(np.mean(recalls))
  cm = np.zeros((7, 7), int)
  np.add.at(cm, (y, p), 1)
  assert got["confusion"] == cm.tolist()
  first = got["per_utterance"][utts[0].name]
  assert first["pred"] == p[0] and first["label"] == y[0]
  np.testing.assert_allclose(first["probs"], np.exp(logits[0]) / np.exp(logits[0]).sum(),
                             atol=1e-6)
