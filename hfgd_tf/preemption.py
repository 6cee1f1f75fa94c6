"""Preemption: SIGTERM or SIGINT during training saves a checkpoint at the step reached, then exits.

SIGTERM is what a preempted VM, a TPU maintenance event, a Kubernetes eviction or Slurm's time
limit sends first; SIGINT is Ctrl-C. The handler only records the signal: the trainer asks
`stop_requested()` after each step or `--steps_per_loop` loop, where model, optimizer, step and
input iterator agree, saves there and raises `TrainingPreempted`; the same command resumes from
that checkpoint. Saving under multi-worker training is collective, so every worker must stop at
the same step: the workers agree through one scalar all-reduce per loop, and a signal to any
worker stops them all.

TF's PreemptionCheckpointHandler is not used: in TF 2.21 it does nothing on Cloud TPU VMs and
GCE CPU machines, ignores SIGINT, and names its checkpoints by save count rather than step.
"""

import signal
import threading

import tensorflow as tf
from absl import logging

# The restart code of TF's PreemptionCheckpointHandler off Google Cloud: launchers configured for
# it restart the job.
PREEMPTED_EXIT_CODE = 42
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingPreempted(SystemExit):
  """Training stopped on a signal after saving its checkpoint; uncaught, the process exits with
  PREEMPTED_EXIT_CODE and no traceback."""

  def __init__(self, message):
    super().__init__(PREEMPTED_EXIT_CODE)
    self.message = message

  def __str__(self):
    return self.message


class SignalWatch:
  """Context manager: inside it, the first SIGTERM or SIGINT is recorded instead of ending the
  process; the handlers from before are back at once, so a second signal acts as usual (Ctrl-C
  twice interrupts). A signal still pending when the context ends (training finished first) is
  handed to the handler from before, synchronously inside `__exit__`: a Python handler is called
  there (SIGINT's default raises KeyboardInterrupt from the `with` statement), the default action
  is raised in this thread (SIGTERM ends the process), an ignored signal stays ignored.

  Usage: with SignalWatch(strategy) as watch: ... if watch.stop_requested(): save and stop.
  """

  def __init__(self, strategy):
    self.received = None  # the signal's name, e.g. "SIGTERM"
    self.consumed = False
    self._previous = {}  # signal number -> its handler from before, while ours is installed
    self._previous_for_received = None
    self._any_worker = None
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
      def count(flag):
        flags = strategy.experimental_distribute_values_from_function(
            lambda _: tf.cast(flag, tf.int32))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None)
      self._any_worker = tf.function(count, input_signature=[tf.TensorSpec([], tf.bool)])

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      logging.warning("Training outside the main thread: SIGTERM/SIGINT cannot be caught, so they "
                      "end it without a checkpoint.")
      return self
    for signum in SIGNALS:
      self._previous[signum] = signal.signal(signum, self._record)
    return self

  def __exit__(self, *unused_exception):
    self._restore()
    if self.received and not self.consumed:
      self._deliver_to_previous(signal.Signals[self.received])

  def _record(self, signum, unused_frame):
    self.received = signal.Signals(signum).name
    self._previous_for_received = self._previous.get(signum)
    self._restore()

  def _deliver_to_previous(self, signum):
    """Acts on `signum` as the handler from before would have, here and now: not by sending the
    signal again, whose Python handler would run at a later bytecode of whatever code runs then."""
    handler = self._previous_for_received
    if callable(handler):
      handler(signum, None)
    elif handler == signal.SIG_DFL:
      signal.raise_signal(signum)  # the default action, in this thread, before this returns

  def _restore(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def stop_requested(self):
    """Whether this process (or, multi-worker, any worker) got a signal. Collective under
    multi-worker training: every worker calls it after the same steps."""
    if self._any_worker is None:
      stop = self.received is not None
    else:
      stop = int(self._any_worker(tf.constant(self.received is not None))) > 0
    self.consumed = self.consumed or stop
    return stop
