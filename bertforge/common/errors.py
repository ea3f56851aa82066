"""Errors a user can act on: each names the file (and line) at fault and what to do."""


class CorpusInputError(ValueError):
    """Bad corpus input: a missing path, an empty corpus, undecodable or malformed records."""

    def __init__(self, path: str, problem: str, fix: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}. {fix}")
        self.path, self.line = path, line
        self._parts = (path, problem, fix, line)

    def __reduce__(self):  # survives pickling out of a datatrove worker process
        return type(self), self._parts


class ConfigError(ValueError):
    """A config key that is unknown, misspelt or has a value that cannot work."""


EXIT_PREEMPTED = 75
"""Exit status of a stopped, resumable run (EX_TEMPFAIL: try again). Not 0: the model is not finished."""


class Preempted(Exception):
    """Training stopped on the cluster's warning signal; the checkpoint to resume from is saved."""


class TrainingDiverged(RuntimeError):
    """Too many optimiser steps in a row had a non-finite loss or gradient: `bad_steps` of them up to
    optimiser step `step` (what optim.on_divergence=rollback needs to find the checkpoint before them)."""

    def __init__(self, message: str, step: int = 0, bad_steps: int = 0):
        super().__init__(message)
        self.step, self.bad_steps = step, bad_steps


class DiskFull(OSError):
    """The disk filled while a checkpoint was being written; the previous one is intact."""


class StageBusy(RuntimeError):
    """Another live process is building the same stage folder (it holds the stage's lock)."""


class FinishedMeanwhile(Exception):
    """The stage folder about to be built was finished by another run after this one found it missing (that
    run held the lock until it was done): nothing is built, the finished folder is the one to use."""

    def __init__(self, folder):
        super().__init__(f"{folder} was finished by another run meanwhile: reuse it")
        self.folder = folder


class TasksFailed(RuntimeError):
    """Tasks of a datatrove step (corpus or shards stage) that did not complete: on SLURM or Ray, or locally where
    a task's process died. The message names them, their logs and, where a task's log has it, the error it
    ended with. A rerun of the same command runs only those tasks."""
