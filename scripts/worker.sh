#!/usr/bin/env bash
# One worker's whole job: prepare the shard keys given on this machine and publish the results.
#
#   scripts/worker.sh KEY [KEY ...]          token arrays: download@KEY, pretokenize@KEY
#   scripts/worker.sh --words KEY [KEY ...]  the tokenizer's text: download@KEY, corpus@KEY, words@KEY
#                                            (keys of corpus.shards; before the tokenizer exists)
#   (WORKER=name sets the branch: worker/<name>; default: the host)
#
# For token arrays it pulls the tokenizer from the DVC remote first; either way it pushes what it made
# to the remote and commits dvc.lock on the branch worker/<name>, pushed to the git remote `origin`
# when there is one. Then `make gather REFS="worker/a worker/b ..."` on one machine merges every
# worker's dvc.lock (after --words: `dvc pull words corpus && dvc repro tokenizer` there trains on
# every shard's counts). Idempotent: rerun after a crash, DVC reruns only the stages whose outputs
# are missing or stale, and the branch gets a commit only when dvc.lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=tokens
if [ "${1:-}" = "--words" ]; then
  mode=words
  shift
fi
if [ "$#" -eq 0 ]; then
  echo "usage: scripts/worker.sh [--words] KEY [KEY ...]  (keys of data.shards; with --words, of corpus.shards)" >&2
  exit 2
fi
worker=${WORKER:-$(hostname -s)}
branch="worker/${worker}"

prepare() {
  local stages=()
  if [ "${mode}" = words ]; then
    dvc repro --single-item word-rules  # the same small file on every worker: their entries merge
    for key in "$@"; do
      dvc repro --single-item "download@${key}" "corpus@${key}" "words@${key}"
      stages+=("corpus@${key}" "words@${key}")
    done
  else
    dvc pull tokenizer  # the shared upstream, trained once; the arrays must use exactly this model
    for key in "$@"; do
      dvc repro --single-item "download@${key}" "pretokenize@${key}"
      stages+=("pretokenize@${key}")
    done
  fi
  dvc push "${stages[@]}"

  git checkout -q -B "${branch}"
  git add dvc.lock
  if ! git diff --cached --quiet; then
    git commit -q -m "worker ${worker}: prepared $*"
  fi
  if git remote get-url origin >/dev/null 2>&1; then
    git push -q --force origin "${branch}"  # the branch is this worker's alone
  fi
  echo "worker ${worker}: done; dvc.lock on ${branch} ($(git rev-parse --short HEAD))"
}

echo "worker ${worker}: ${mode} of shards $*"
# One worker per clone. Holding this lock, any entry in DVC's stage lock (.dvc/tmp/rwlock) was left
# by a run of this script that was killed mid-stage: DVC trusts the pid written there, which a
# killed process keeps while it is unreaped (a container without init) or which another process
# reuses (a requeued job on another node), and would refuse to run. Only this shell holds the lock
# (`9>&-` keeps it from dvc, git and the daemons they leave behind), so it ends with the script,
# however the script died.
mkdir -p .dvc/tmp
exec 9>.dvc/tmp/worker.lock
if ! flock --nonblock 9; then
  echo "worker ${worker}: another worker runs in $(pwd); one worker per clone" >&2
  exit 1
fi
rm -f .dvc/tmp/rwlock
prepare "$@" 9>&-
