"""``python tests/hang_after_checkpoint.py ARGS``: ``sentjax train ARGS`` that, once its first checkpoint
is committed, prints ``CHECKPOINT_COMMITTED <step>`` and freezes, to be killed by the test
(test_multiprocess.py). The freeze is patched in here; the trainer has no hook."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tiny.py, for the test's config file

from sentjax.train import checkpoint, train  # noqa: E402

_save = checkpoint.Checkpointer.save


def _save_then_hang(self, step, *args, **kwargs):
    _save(self, step, *args, **kwargs)
    self.wait()
    print(f"CHECKPOINT_COMMITTED {step}", flush=True)
    while True:
        time.sleep(1)


checkpoint.Checkpointer.save = _save_then_hang

if __name__ == "__main__":
    sys.exit(train.main(sys.argv[1:]))
