"""`bertforge` whose rank 1 computes a NaN training loss on its calls listed in BERTFORGE_TEST_NAN_CALLS:
a NaN on one rank only, as a bad batch or a flaky device gives. A test helper, run as a script so that
Lightning starts rank 1 by running this same file again."""

import os
import sys

import pretrain.module as module
from bertforge.cli import main

BAD = {int(c) for c in os.environ["BERTFORGE_TEST_NAN_CALLS"].split(",")}
real, calls = module.sparse_mlm_loss, []


def loss_with_nans(*args):
    value, correct = real(*args)
    if os.environ.get("LOCAL_RANK", "0") != "1":
        return value, correct
    calls.append(None)
    return (value * float("nan"), correct) if len(calls) in BAD else (value, correct)


module.sparse_mlm_loss = loss_with_nans
main(sys.argv[1:])
