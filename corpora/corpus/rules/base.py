"""The base of every bertforge filter step: datatrove's `BaseFilter` with its bookkeeping done per step.

datatrove's own loop does, per document and per step, three counter updates, a timer context and a
length statistic: a tenth of the corpus stage's time in the benchmark. Here the loop counts in local
variables and hands datatrove the same totals (documents seen, forwarded, dropped per reason, time)
once, when the step's input ends. Removed documents still go to the exclusion writer one by one,
with `filter_reason` set.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.batching import batched
from datatrove.utils.typeshelper import StatHints


class FilterStep(BaseFilter):
    """Subclasses implement `filter(doc)` -> True, or (False, reason), as for datatrove's BaseFilter,
    or, given `batch_size` > 1, `filter_batch(docs)` -> one such verdict per document."""

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        seen = kept = 0
        dropped: Counter = Counter()
        spent = 0.0
        clock = time.perf_counter
        batches = ([doc] for doc in data) if self.batch_size == 1 else batched(data, self.batch_size)
        with self.exclusion_writer if self.exclusion_writer else contextlib.nullcontext() as writer:
            try:
                for docs in batches:
                    started = clock()
                    verdicts = self.filter_batch(docs)
                    spent += clock() - started
                    seen += len(docs)
                    for doc, verdict in zip(docs, verdicts):
                        keep, reason = verdict if isinstance(verdict, tuple) else (verdict, None)
                        if keep:
                            kept += 1
                            yield doc
                            continue
                        dropped[reason] += 1
                        if writer is not None:
                            if reason:
                                doc.metadata["filter_reason"] = reason
                            writer.write(doc, rank)
            finally:
                self._record(seen, kept, dropped, spent)

    def _record(self, seen: int, kept: int, dropped: Counter, spent: float) -> None:
        if spent:
            self.stats.time_stats.update(spent)
        for label, count in ((StatHints.total, seen), (StatHints.forwarded, kept),
                             (StatHints.dropped, sum(dropped.values()))):
            if count:
                self.stat_update(label, value=count)
        for reason, count in dropped.items():
            if reason:
                self.stat_update(f"dropped_{reason}", value=count)
