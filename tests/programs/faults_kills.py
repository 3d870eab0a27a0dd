"""A reference run and one run killed hard three times, then completed (tests/test_faults.py).

argv: ROOT STEPS EVERY SEED. Prints a JSON line.
"""

import json, os, random, signal, sys, time, traceback
import jax, numpy as np
import common
from mutualnet_jax.training import checkpointing
from mutualnet_jax.data import pipeline
from mutualnet_jax.training import trainer
root, steps, every, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
real_restore, real_save = checkpointing.restore_latest, checkpointing.save
real_batches = pipeline.device_batches


def child(workdir, events, kill_after_save, kill_at_step, step_time):
  """Train in workdir, logging events; SIGKILL itself at the requested point."""
  log = open(events, 'a', buffering=1)
  note = lambda **e: log.write(json.dumps(e) + '\n')
  seen = {}
  listing = lambda m: sorted(os.listdir(str(m.directory)))

  def restore_latest(manager, *a, **k):
    seen['manager'] = manager
    found = real_restore(manager, *a, **k)
    seen['start'] = 0 if found is None else int(found[0])
    note(event='resumed', step=None if found is None else int(found[0]), listing=listing(manager))
    return found

  def save(manager, step, *a, **k):
    note(event='save', step=step)
    out = real_save(manager, step, *a, **k)
    if step == kill_after_save:   # orbax returned; the background write is still in flight
      note(event='kill', step=step, listing=listing(manager))
      os.kill(os.getpid(), signal.SIGKILL)
    return out

  def device_batches(*a, **k):
    for i, batch in enumerate(real_batches(*a, **k)):
      step = seen['start'] + i
      if step == kill_at_step:    # mid-interval, once the previous checkpoint is complete
        seen['manager'].wait_until_finished()
        note(event='kill', step=step, listing=listing(seen['manager']))
        os.kill(os.getpid(), signal.SIGKILL)
      note(event='batch', step=step)
      time.sleep(step_time)   # the random kill: slow enough that it lands before the end
      yield batch

  checkpointing.restore_latest, checkpointing.save = restore_latest, save
  pipeline.device_batches = device_batches
  c = common.tiny_config(num_train_steps=steps, checkpoint_every_steps=every)
  state = trainer.train(c, workdir)
  leaves = [np.asarray(l) for l in jax.tree.leaves(jax.device_get(state.params))]
  np.savez(os.path.join(workdir, 'final.npz'), *leaves)
  note(event='done', step=int(state.step))


def events_of(path):
  if not os.path.exists(path):
    return []
  return [json.loads(l) for l in open(path) if l.endswith('\n')]


def run(name, workdir, kill_after_save=-1, kill_at_step=-1, random_kill=None):
  step_time = 0.0 if random_kill is None else 0.6   # 4 steps left: >= 2.4 s > the 1.5 s delay
  events = os.path.join(root, name + '.jsonl')
  sys.stdout.flush(); sys.stderr.flush()
  pid = os.fork()
  if pid == 0:
    code = 0
    try:
      child(workdir, events, kill_after_save, kill_at_step, step_time)
    except BaseException:
      traceback.print_exc()
      code = 1
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code)
  delay = None
  if random_kill is not None:
    # From outside, at a random time once training has started.
    while not any(e['event'] == 'batch' for e in events_of(events)):
      if os.waitpid(pid, os.WNOHANG) != (0, 0):
        raise SystemExit('child exited before training started')
      time.sleep(0.05)
    delay = random_kill.uniform(0.0, 1.5)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
  _, status = os.waitpid(pid, 0)
  ckpt = os.path.join(workdir, 'checkpoints')
  return {'name': name, 'killed': os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
          'exit': os.WEXITSTATUS(status) if os.WIFEXITED(status) else None, 'delay': delay,
          'events': events_of(events),
          'after': sorted(os.listdir(ckpt)) if os.path.isdir(ckpt) else []}


rng = random.Random(seed)
ref, wd = os.path.join(root, 'ref'), os.path.join(root, 'killed')
runs = [run('ref', ref),
        run('kill_after_save', wd, kill_after_save=4),
        run('kill_mid_interval', wd, kill_at_step=7),
        run('kill_random', wd, random_kill=rng),
        run('final', wd)]
a, b = np.load(os.path.join(ref, 'final.npz')), np.load(os.path.join(wd, 'final.npz'))
same = len(a.files) == len(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
print(json.dumps({'runs': runs, 'same_params': bool(same), 'seed': seed}))
