"""The evaluate stage: held-out masked-token scores of a checkpoint against its untrained twin."""
