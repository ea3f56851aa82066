"""Static masking (Google BERT's `create_pretraining_data.py`, `dupe_factor`): maskings drawn once, stored.

gaBERT and LEGAL-BERT were trained on examples masked once, in advance, `dupe_factor` times each with
different masks. The shards stage does the same for the training rows: for every row length L and
every copy d it stores which positions are masked and what the model sees there:

  train-<L>.mask_positions.bin   (dupe_factor, rows, k) positions in the row, ascending, dtype uint16
  train-<L>.mask_inputs.bin      (dupe_factor, rows, k) the ids fed at those positions ([MASK], a random
                                 token or the original: 80/10/10), the rows' dtype

k is the same for every row (ratio x maskable tokens, capped by `max_predictions_per_seq`), so training
batches keep static shapes, as with dynamic masking. The draws are a pure function of (seed, L, d, row
chunk), so a rebuild gives the same bytes. Held-out rows are not masked here: evaluation draws its own
masks with a fixed seed, the same for a static and a dynamic model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bertforge.common.errors import ConfigError

_NEVER = 2.0  # a score above every uniform draw: special tokens are never chosen
_CHUNK_ROWS = 4096  # rows drawn at once: bounds memory to a few MB whatever the corpus size


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


def write_static_masks(rows: np.ndarray, spec: StaticMasking, count: int, special_ids: list[int], mask_id: int,
                       vocab_size: int, word_starts: np.ndarray | None, positions_path: Path,
                       inputs_path: Path) -> None:
    """Draw `spec.dupe_factor` maskings of `count` positions for every row of `rows` (rows, L) and write them.

    `word_starts` (vocab,) bool, when given, makes whole words the unit: one draw per word, so the k
    lowest draws take whole words (the last one may be cut to keep k fixed)."""
    n_rows, seq_len = rows.shape
    special = np.zeros(max(vocab_size, int(rows.max(initial=0)) + 1), dtype=bool)
    special[special_ids] = True
    with open(positions_path, "wb") as positions_out, open(inputs_path, "wb") as inputs_out:
        for dupe in range(spec.dupe_factor):
            for start in range(0, n_rows, _CHUNK_ROWS):
                rng = np.random.default_rng([spec.seed, seq_len, dupe, start])
                block = np.asarray(rows[start:start + _CHUNK_ROWS])  # (n, L)
                positions, inputs = _draw(block, count, rng, spec, special, mask_id, vocab_size, word_starts)
                positions_out.write(positions.astype(np.uint16).tobytes())
                inputs_out.write(inputs.astype(rows.dtype).tobytes())


def _draw(block: np.ndarray, count: int, rng: np.random.Generator, spec: StaticMasking, special: np.ndarray,
          mask_id: int, vocab_size: int, word_starts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    scores = rng.random(block.shape)  # (n, L)
    if word_starts is not None:
        starts = word_starts[block]  # (n, L) bool
        starts[:, 0] = True
        position = np.broadcast_to(np.arange(block.shape[1]), block.shape)
        first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)  # each token's word start
        scores = np.take_along_axis(scores, first, axis=1)  # one draw per word
    scores = np.where(special[block], _NEVER, scores)
    positions = np.sort(np.argsort(scores, axis=1, kind="stable")[:, :count], axis=1)  # (n, k)
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
