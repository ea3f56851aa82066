"""Static masking (Google BERT's `create_pretraining_data.py`, `dupe_factor`): maskings drawn once, stored.

gaBERT and LEGAL-BERT were trained on examples masked once, in advance, `dupe_factor` times each with
different masks. The shards stage does the same for the training rows: for every row length L and
every copy d it stores which positions are masked and what the model sees there:

  train-<L>.mask_positions.bin   (dupe_factor, rows, k) positions in the row, in draw order (random; a
                                 word's tokens together), dtype uint16: a pair row masking fewer than k
                                 uses the first of them
  train-<L>.mask_inputs.bin      (dupe_factor, rows, k) the ids fed at those positions ([MASK], a random
                                 token or the original: 80/10/10), the rows' dtype

k is the same for every row (ratio x maskable tokens, capped by `max_predictions_per_seq`), so training
batches keep static shapes, as with dynamic masking. The draws are a pure function of (seed, L, d, row
chunk), so a rebuild gives the same bytes, and so does any split of the chunks between tasks: the shards
stage draws them as datatrove tasks (`DrawMasks`) on the corpus stage's executor, each writing its own
contiguous range of row chunks in place into files the stage sized beforehand. Held-out rows are not masked
here: evaluation draws its own masks with a fixed seed, the same for a static and a dynamic model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep

from bertforge.common.errors import ConfigError

_NEVER = 2.0  # a score above every uniform draw: special tokens are never chosen
CHUNK_ROWS = 4096  # rows drawn at once, from one seed: bounds memory to a few MB whatever the corpus size


@dataclass(frozen=True)
class StaticMasking:
    """What the shards stage needs to draw static masks (the pretrain side's masking keys, and the seed)."""

    ratio: float
    replace_with_mask: float
    replace_with_random: float
    whole_word: bool
    dupe_factor: int
    max_predictions_per_seq: int
    seed: int

    def check(self) -> None:
        if self.dupe_factor < 1:
            raise ConfigError(f"masking.dupe_factor={self.dupe_factor}: static masking needs at least one copy")
        if self.max_predictions_per_seq < 0:
            raise ConfigError(f"masking.max_predictions_per_seq={self.max_predictions_per_seq} must be 0 (no cap) "
                              "or more")

    def payload(self) -> dict:
        return asdict(self)


def per_row(ratio: float, seq_len: int, maskable_share: float, cap: int = 0) -> int:
    """Masked tokens per row: `ratio` of the maskable tokens (at least 1), at most `cap` when it is set.
    The same rule as the model side's `pretrain.masking.Masker.per_row`."""
    count = max(1, round(ratio * seq_len * maskable_share))
    return min(count, cap) if cap else count


def mask_files(folder: Path, split: str, seq_len: int) -> tuple[Path, Path]:
    """(positions file, inputs file) of one split and row length."""
    return folder / f"{split}-{seq_len}.mask_positions.bin", folder / f"{split}-{seq_len}.mask_inputs.bin"


def chunk_count(rows: int, chunk_rows: int | None = None) -> int:
    """How many chunks of `chunk_rows` rows (default `CHUNK_ROWS`) are drawn apart, each from its own seed:
    the unit split between tasks."""
    return -(-rows // (chunk_rows or CHUNK_ROWS))


def allocate_mask_files(rows: int, count: int, dupe_factor: int, dtype, positions_path: Path,
                        inputs_path: Path) -> None:
    """Size the (dupe_factor, rows, count) positions and inputs files that the tasks fill in place. Bytes
    already there stay: a rerun after a kill keeps what the finished tasks wrote."""
    for path, itemsize in ((positions_path, 2), (inputs_path, np.dtype(dtype).itemsize)):
        with open(path, "ab") as handle:
            handle.truncate(dupe_factor * rows * count * itemsize)


class DrawMasks(PipelineStep):
    """Task r of T: the static maskings of its contiguous share of the row chunks of every row file in
    `sources` ((rows file, row length, masked tokens per row, positions file, inputs file)), written in
    place into the files `allocate_mask_files` sized."""

    type = "🎭 - MASK"
    name = "🎭 shards static masks"

    def __init__(self, spec: StaticMasking, sources: list[tuple[str, int, int, str, str]], special_ids: list[int],
                 mask_id: int, vocab_size: int, dtype: str, tokenizer_file: str, tasks: int):
        super().__init__()
        self.spec, self.sources, self.special_ids, self.mask_id = spec, sources, special_ids, mask_id
        self.vocab_size, self.dtype, self.tokenizer_file, self.tasks = vocab_size, dtype, tokenizer_file, tasks
        self.chunk_rows = CHUNK_ROWS  # as the stage counted the chunks (a test draws smaller ones)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from tokenizers import Tokenizer

        from corpora.vocab.word_starts import word_start_table

        word_starts = word_start_table(Tokenizer.from_file(self.tokenizer_file)) if self.spec.whole_word else None
        with self.track_time():
            for rows_path, seq_len, count, positions_path, inputs_path in self.sources:
                row_bytes = seq_len * np.dtype(self.dtype).itemsize
                n_rows = Path(rows_path).stat().st_size // row_bytes
                chunks = chunk_count(n_rows, self.chunk_rows)
                # rows read and masks written at their offsets in the files, not through memory maps: mapped
                # pages would count in the task's resident memory, up to its whole share of the files
                with open(positions_path, "r+b") as positions, open(inputs_path, "r+b") as inputs:
                    for chunk in range(rank * chunks // self.tasks, (rank + 1) * chunks // self.tasks):
                        start = chunk * self.chunk_rows
                        n = min(self.chunk_rows, n_rows - start)
                        block = np.fromfile(rows_path, self.dtype, n * seq_len, offset=start * row_bytes
                                            ).reshape(n, seq_len)
                        special = np.zeros(max(self.vocab_size, int(block.max(initial=0)) + 1), dtype=bool)
                        special[self.special_ids] = True
                        for dupe in range(self.spec.dupe_factor):
                            rng = np.random.default_rng([self.spec.seed, seq_len, dupe, start])
                            drawn = _draw(block, count, rng, self.spec, special, self.mask_id, self.vocab_size,
                                          word_starts)
                            at = (dupe * n_rows + start) * count  # the first of this block's entries
                            for handle, values, dtype in ((positions, drawn[0], np.uint16),
                                                          (inputs, drawn[1], self.dtype)):
                                handle.seek(at * np.dtype(dtype).itemsize)
                                handle.write(values.astype(dtype).tobytes())
                        self.stat_update("rows", value=len(block))
        return iter(())


def _draw(block: np.ndarray, count: int, rng: np.random.Generator, spec: StaticMasking, special: np.ndarray,
          mask_id: int, vocab_size: int, word_starts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(positions, inputs), each (n, count), of one masking of `block` (n, L). `word_starts` (vocab,) bool,
    when given, makes whole words the unit: one draw per word, so the `count` lowest draws take whole words
    (the last one may be cut to keep `count` fixed)."""
    scores = rng.random(block.shape)  # (n, L)
    if word_starts is not None:
        starts = word_starts[block]  # (n, L) bool
        starts[:, 0] = True
        position = np.broadcast_to(np.arange(block.shape[1]), block.shape)
        first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)  # each token's word start
        scores = np.take_along_axis(scores, first, axis=1)  # one draw per word
    scores = np.where(special[block], _NEVER, scores)
    positions = np.argsort(scores, axis=1, kind="stable")[:, :count]  # (n, k), lowest draw first
    targets = np.take_along_axis(block, positions, axis=1)  # (n, k)
    split = rng.random(targets.shape)
    random_ids = rng.integers(0, vocab_size, targets.shape)
    random_ids = np.where(special[random_ids], targets, random_ids)  # never a special token: keep the original
    inputs = np.where(split < spec.replace_with_mask, mask_id, targets)
    use_random = (split >= spec.replace_with_mask) & (split < spec.replace_with_mask + spec.replace_with_random)
    return positions, np.where(use_random, random_ids, inputs)


def load_static_masks(folder: Path, seq_len: int, fmt: dict) -> tuple[np.memmap, np.memmap] | None:
    """The (dupe, rows, k) positions and inputs of the training rows of `seq_len`, or None when the shards
    hold no static masks. `fmt` is the shards manifest's format section."""
    info = fmt.get("static_masks")
    if not info:
        return None
    k, dupes = info["per_row"][str(seq_len)], info["dupe_factor"]
    positions_path, inputs_path = mask_files(Path(folder), "train", seq_len)
    positions = np.memmap(positions_path, dtype=np.uint16, mode="r").reshape(dupes, -1, k)
    inputs = np.memmap(inputs_path, dtype=fmt["dtype"], mode="r").reshape(dupes, -1, k)
    return positions, inputs
