#!/usr/bin/env bash
# The GPU suite on a lent machine that has PyTorch, transformers and Lightning but not this project's
# other dependencies, and no network (see README.md here). Two halves:
#
#   bench/gpu/bare_machine.sh pack           # here, in the repository with its .venv: fills .gpu/ (ignored by git)
#                                            # with hydra-core, omegaconf and antlr4 and the commit; carry .gpu
#   bench/gpu/bare_machine.sh run [args]     # there, from the repository root: the suite (args go to
#                                            # bench/gpu_suite.sh, e.g. --profile) into $OUT/suite.tar.gz
#
# `run` writes everything to one archive because the machine returns only a few files.
set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-}" in
  pack)
    site=$(.venv/bin/python -c "import hydra, pathlib; print(pathlib.Path(hydra.__file__).parents[1])")
    rm -rf .gpu/site && mkdir -p .gpu/site
    for package in hydra omegaconf antlr4; do cp -r "$site/$package" .gpu/site/; done
    commit=$(git rev-parse --short HEAD)
    git diff --quiet HEAD || commit="$commit+uncommitted"
    echo "$commit" > .gpu/commit
    du -sh .gpu | sed "s/$/ (commit $commit)/"
    ;;
  run)
    shift
    : "${OUT:?set OUT to the folder that comes back}"
    [[ -d .gpu/site ]] || { echo "no .gpu/site: run 'bench/gpu/bare_machine.sh pack' here and carry .gpu" >&2; exit 2; }
    export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHON="${PYTHON:-python3}"
    export BERTFORGE_COMMIT="$(cat .gpu/commit)"  # the machine's copy of .git may be stale
    site=/tmp/bertforge-site results=/tmp/bertforge-suite
    rm -rf "$site" "$results" && mkdir -p "$site" "$results"
    cp -r .gpu/site/* "$site/" && ln -sfn "$PWD/conf" "$site/bertforge_conf"
    export PYTHONPATH="$site:$PWD"
    set +e  # whatever fails, the log and the results so far come back
    {
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
      "$PYTHON" -c "import torch, transformers, lightning; print('torch', torch.__version__, 'transformers', transformers.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
      OUT="$results" bash bench/gpu_suite.sh "$@"
      echo $? > "$results/exit_status"
    } 2>&1 | tee "$results/log.txt"
    status=$(cat "$results/exit_status" 2>/dev/null || echo 1)
    echo "suite exit status $status" | tee -a "$results/log.txt"
    tar -czf "$OUT/suite.tar.gz" -C "$results" .
    exit "$status"
    ;;
  *)
    sed -n 2,10p "$0" >&2
    exit 2
    ;;
esac
