"""The MutualNet step and trainer (issue 3): sandwich x resolution, one all-reduce, exact resume."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import common
from mutualnet_jax import models
from mutualnet_jax.training import optim
from mutualnet_jax.training import mutualnet
from mutualnet_jax.training import step_kernels


@pytest.mark.slow
def test_step_on_8_devices_one_allreduce_loss_down_kernels_match_draws():
  out = common.last_json(common.run_program('train_on_8_devices', devices=8).stdout)
  assert out['devices'] == 8
  # The same global batch every step: the teacher's cross-entropy must fall.
  assert out['losses'][-1] < out['losses'][0] - 0.05, out['losses']
  # Exactly one cross-device gradient mean per step, read from the compiled HLO.
  assert out['all_reduce_per_step'] == [1] * 8
  # One compiled kernel per drawn (width, resolution) pair, and no others.
  assert out['compiled'] == out['drawn']
  assert len(out['drawn']) > 2


def test_two_hosts_draw_the_same_subnets_without_communicating():
  other_host = common.last_json(common.run_program('train_sampler').stdout)
  c = common.tiny_config(seed=7, width_lower=0.25, width_step=0.05,
                         resolutions=(224, 192, 160, 128))
  here = [[[s.width, s.resolution, s.teacher] for s in mutualnet.draw_subnets(c, t)]
          for t in range(200)]
  assert here == other_host
  # The sandwich: teacher at (1.0, 224), the smallest width always, students widest first.
  grid = mutualnet.width_grid(0.25, 1.0, 0.05)
  for draw in here:
    assert draw[0] == [1.0, 224, True]
    widths = [w for w, _, _ in draw[1:]]
    assert widths == sorted(widths, reverse=True) and widths[-1] == 0.25
    assert all(w in grid for w in widths)
  resolutions = {r for draw in here for _, r, _ in draw[1:]}
  assert resolutions == {224, 192, 160, 128}
  # Another seed gives another sequence.
  c.seed = 8
  assert [[[s.width, s.resolution, s.teacher] for s in mutualnet.draw_subnets(c, t)]
          for t in range(200)] != here


def test_modes_usnet_and_independent():
  c = common.tiny_config(method='usnet', width_step=0.1)
  for t in range(20):
    assert {s.resolution for s in mutualnet.draw_subnets(c, t)} == {16}
  c = common.tiny_config(method='independent', independent_width=0.5, independent_resolution=8)
  assert mutualnet.draw_subnets(c, 3) == [mutualnet.Subnet(0.5, 8, True)]


def test_width_grid():
  assert mutualnet.width_grid(0.25, 1.0, 0.25) == (0.25, 0.5, 0.75, 1.0)
  assert len(mutualnet.width_grid(0.25, 1.0, 0.05)) == 16
  assert mutualnet.width_grid(0.7, 1.0, 0.2) == (0.7, 0.9, 1.0)
  with pytest.raises(ValueError):
    mutualnet.width_grid(1.0, 0.5, 0.1)


def test_step_gradient_is_the_sum_of_the_four_losses_gradients():
  """Eq. 4: the kernels' accumulated gradient equals the gradient of mutualnet.step_loss."""
  c = common.tiny_config()
  model = models.create(c.model, num_classes=10, max_width=1.0, min_width=0.5)
  x = jax.random.normal(jax.random.key(1), (8, 16, 16, 3))
  y = jnp.arange(8) % 10
  params = model.init(jax.random.key(0), x, width=1.0, train=True)['params']
  subnets = [mutualnet.Subnet(1.0, 16, True), mutualnet.Subnet(1.0, 8), mutualnet.Subnet(0.5, 16),
             mutualnet.Subnet(0.5, 8)]
  batch = {'label': y, mutualnet.image_key(16): x,
           mutualnet.image_key(8): jax.image.resize(x, (8, 8, 8, 3), 'bilinear')}
  apply = lambda p, images, width: model.apply({'params': p}, images, width=width, train=True)

  @jax.jit
  def accumulated(p):
    grads, probs, _, _ = step_kernels.teacher_step(p, batch[mutualnet.image_key(16)], y,
                                                   model=model, width=1.0)
    for s in subnets[1:]:
      grads, _, _ = step_kernels.student_step(p, grads, batch[mutualnet.image_key(s.resolution)],
                                              probs, model=model, width=s.width)
    return grads

  expected = jax.jit(jax.grad(lambda p: mutualnet.step_loss(p, batch, subnets, apply)))(params)
  grads = accumulated(params)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_step_loss_is_cross_entropy_plus_distillation_with_a_detached_teacher():
  """Eq. 4 written out by hand: CE of the teacher + KL of each student to its soft targets,
  and no gradient flows through the targets (the teacher learns from the labels only)."""
  logits = {1.0: jnp.array([[2.0, 0.5, -1.0]]), 0.5: jnp.array([[0.1, 0.3, 0.2]])}
  apply = lambda p, images, width: p * logits[width]
  subnets = [mutualnet.Subnet(1.0, 4, True), mutualnet.Subnet(0.5, 4)]
  batch = {'label': jnp.array([1]), mutualnet.image_key(4): jnp.zeros((1, 4, 4, 3))}
  t = jax.nn.softmax(logits[1.0][0])
  s = jax.nn.log_softmax(logits[0.5][0])
  by_hand = -jnp.log(t[1]) + jnp.sum(t * (jnp.log(t) - s))
  np.testing.assert_allclose(mutualnet.step_loss(1.0, batch, subnets, apply), by_hand, rtol=1e-6)
  # d/dp with the target held: CE's gradient plus the student's KL gradient only.
  ce_grad = jax.grad(lambda p: mutualnet.cross_entropy(p * logits[1.0], batch['label']))(1.0)
  kl_grad = jax.grad(lambda p: mutualnet.distillation_kl(p * logits[0.5], t[None]))(1.0)
  np.testing.assert_allclose(jax.grad(mutualnet.step_loss)(1.0, batch, subnets, apply),
                             ce_grad + kl_grad, rtol=1e-5)


def test_distillation_kl_matches_definition():
  s = jnp.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
  t = jax.nn.softmax(jnp.array([[0.3, 0.1, 2.0], [1.0, 1.0, 1.0]]))
  expected = np.sum(np.asarray(t) * (np.log(t) - np.asarray(jax.nn.log_softmax(s)))) / 2
  np.testing.assert_allclose(mutualnet.distillation_kl(s, t), expected, rtol=1e-6)


def test_optimizer_matches_reference_sgd():
  """Nesterov SGD with coupled weight decay on conv/dense kernels only, cosine to zero."""
  c = common.tiny_config(global_batch_size=1024, base_lr=0.5, weight_decay=0.1)
  schedule = optim.learning_rate_schedule(c, total_steps=10, steps_per_epoch=5)
  assert float(schedule(0)) == pytest.approx(0.5) and float(schedule(10)) == pytest.approx(0.0)
  assert float(schedule(5)) == pytest.approx(0.25)
  opt = optim.create_optimizer(c, schedule)
  params = {'conv': {'kernel': jnp.ones(2)}, 'dw': {'depthwise_kernel': jnp.ones(2)},
            'bn': {'scale': jnp.ones(2), 'bias': jnp.ones(2)}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  updates, _ = opt.update(grads, opt.init(params), params)
  # First Nesterov step: buf = g; update = -lr * (g + 0.9 * buf) = -lr * 1.9 g.
  np.testing.assert_allclose(updates['conv']['kernel'], -0.5 * 1.9 * (0.5 + 0.1), rtol=1e-6)
  for leaf in (updates['dw']['depthwise_kernel'], updates['bn']['scale'], updates['bn']['bias']):
    np.testing.assert_allclose(leaf, -0.5 * 1.9 * 0.5, rtol=1e-6)


def _resume_run(workdir, sigterm_at):
  return common.last_json(common.run_program('train_resume', workdir, sigterm_at, devices=2).stdout)


@pytest.mark.slow
def test_sigterm_saves_and_resume_matches_uninterrupted_run(tmp_path):
  uninterrupted = _resume_run(tmp_path / 'a', -1)
  assert uninterrupted['step'] == 6 and uninterrupted['started'] == [0]
  stopped = _resume_run(tmp_path / 'b', 3)
  assert stopped['step'] == 4, 'SIGTERM during step 3 saves after that step and exits'
  assert sorted(os.listdir(tmp_path / 'b' / 'checkpoints'))[-1] == '4'
  resumed = _resume_run(tmp_path / 'b', -1)
  assert resumed['started'] == [4], 'the second run must continue from the saved step'
  assert resumed['step'] == 6
  assert resumed['first'] == uninterrupted['first']
  assert resumed['checksum'] == uninterrupted['checksum']


def test_without_distillation_the_students_learn_from_the_labels():
  """``student_targets='labels'`` (the ablation): each student's loss is its cross-entropy, in
  ``step_loss`` and through the compiled kernels (whose step reports every subnet's loss)."""
  from jax.sharding import NamedSharding, PartitionSpec as P
  from mutualnet_jax.data import pipeline
  from mutualnet_jax.runtime import parallel
  c = common.tiny_config(student_targets='labels')
  mesh = parallel.create_mesh()
  parts = step_kernels.build_step(c, mesh, 100, 10)
  model, kernels = parts.model, parts.kernels
  params = jax.device_get(parts.state.params)
  state = lambda: jax.device_put(step_kernels.create_train_state(params, parts.optimizer),
                                 NamedSharding(mesh, P()))   # the update donates it
  batch = next(pipeline.device_batches(pipeline.create_train_dataset(c), mesh))
  subnets = mutualnet.draw_subnets(c, 0)
  apply = lambda p, images, width: model.apply({'params': p}, images, width=width, train=True)
  ce = [float(mutualnet.cross_entropy(apply(params, batch[mutualnet.image_key(s.resolution)],
                                            s.width), batch['label'])) for s in subnets]
  _, m = step_kernels.run_step(kernels, state(), batch, subnets, student_targets='labels')
  np.testing.assert_allclose(np.asarray(m['losses']), ce, rtol=1e-4)
  np.testing.assert_allclose(
      mutualnet.step_loss(params, batch, subnets, apply, student_targets='labels'), sum(ce),
      rtol=1e-4)
  # With the teacher's targets the students' losses are smaller than their cross-entropy (the
  # untrained teacher's softmax is near uniform, as is theirs).
  _, m = step_kernels.run_step(kernels, state(), batch, subnets)
  assert all(float(k) < e - 0.5 for k, e in zip(np.asarray(m['losses'])[1:], ce[1:])), (m, ce)
