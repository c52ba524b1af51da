#!/usr/bin/env bash
# run-slurm-smoke.sh -- the smoke pipeline (config/smoke.yaml) on a REAL one-node Slurm cluster, submitted by
# `snakemake --profile profiles/slurm` (official snakemake-executor-plugin-slurm), end to end.
#
# Needs root on Debian: apt installs Slurm, MariaDB and munge when missing, and tests/slurm/start-local-slurm.sh
# starts munged, a private mariadbd + slurmdbd (accounting, so sacct works), slurmctld and slurmd. Without root,
# apt or Debian it prints "SKIP: ..." and exits 0. Every daemon this script started is stopped on exit, also
# after a failure or Ctrl-C (tests/slurm/stop-local-slurm.sh, by PID); daemons that were already running are
# left alone. Nothing in the checkout is written: the pipeline runs in a temporary working directory.
#
#   1. failing run, everything up to scoring (--omit-from score): the harmless reward model points at a
#      directory that does not exist, so its accuracy job fails in Slurm (and again on the retry, which asks
#      for twice the memory) while every other job completes (keep-going); snakemake must exit non-zero and
#      report the Slurm job as FAILED;
#   2. resumed run, the whole DAG with the real config: exactly the jobs run 1 did not complete are submitted,
#      the run completes, and the smoke artifacts (value vectors, decorrelation tables, generations and scores,
#      frontiers, figures, summary.md) are there;
#   3. sacct: one COMPLETED Slurm job per non-local pipeline job of the whole DAG (by rule), as many Slurm jobs
#      as the plugin logged, and the failed ones as FAILED.
# Last line: "N passed, M failed" (exit status 1 if M > 0), or "SKIP: <why>" (exit status 0).
#
# Environment:
#   MVA_SHARED_DATA     data root with hh-rlhf/{helpful,harmless}-base/test.jsonl.gz
#                       (default <repo>/../shared/data; synthetic HH rows when that is missing)
#   MVA_SLURM_TIMEOUT   seconds per snakemake call (default 600; then SIGINT, SIGKILL 200 s later)
#   MVA_SLURM_KEEP=1    keep the temporary working directory (it is always kept after a failure)
#   MVA_SLURM_SKIP=1    skip (prints SKIP)
#   PYTHON              interpreter with snakemake, the plugin and this project (default python3)
#   LOCAL_SLURM_*       passed on to start-local-slurm.sh (state dir, ports, node size ...)
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/../.." && pwd))
PYTHON=${PYTHON:-python3}
LIMIT=${MVA_SLURM_TIMEOUT:-600}
STATE=${LOCAL_SLURM_STATE:-/var/lib/local-slurm}
T0=$SECONDS

say() { echo "[slurm-smoke +$((SECONDS - T0))s] $*"; }
skip() { echo "SKIP: Slurm end-to-end test not run: $*"; exit 0; }
csort() { LC_ALL=C sort "$@"; }

# ------------------------------------------------------------- preconditions (SKIP, never silently) ---
[ "${MVA_SLURM_SKIP:-0}" = 1 ] && skip "MVA_SLURM_SKIP=1"
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        say "not root: re-running under sudo"
        exec sudo -n -E "$0" "$@"
    fi
    skip "needs root (apt-get, munge, Slurm daemons); not root and no passwordless sudo"
fi
missing=()
for tool in munged slurmctld slurmd sbatch sacct slurmdbd mariadbd; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null || [ ! -f /etc/debian_version ]; then
        skip "Slurm is not installed (${missing[*]} missing) and this is not Debian with apt-get"
    fi
    say "installing Slurm from Debian packages (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get update -q >/tmp/mva-slurm-apt.log 2>&1 ||
        ! apt-get install -y -q --no-install-recommends munge slurmctld slurmd slurm-client slurmdbd \
            mariadb-server >>/tmp/mva-slurm-apt.log 2>&1; then
        tail -n 5 /tmp/mva-slurm-apt.log
        skip "apt-get could not install the Slurm packages (log: /tmp/mva-slurm-apt.log)"
    fi
fi

# ----------------------------------------------------------- bookkeeping; cleanup ALWAYS runs on exit ---
PASSED=0
FAILED=0
check() { # check DESCRIPTION COMMAND...: run COMMAND, count and print the result
    local what=$1
    shift
    if "$@"; then
        PASSED=$((PASSED + 1))
        echo "  ok   $what"
    else
        FAILED=$((FAILED + 1))
        echo "  FAIL $what"
    fi
}
abort() { FAILED=$((FAILED + 1)); echo "  FAIL $*"; exit 1; }

WORK=$(mktemp -d /tmp/mva-slurm-smoke.XXXXXX)
STARTED_LIST=$WORK/started-daemons
: >"$STARTED_LIST"
SMK_PID=""
RUN_UUIDS=()
cleanup() {
    local rc=$? i uuid
    trap - EXIT INT TERM
    if [ -n "$SMK_PID" ] && kill -0 "$SMK_PID" 2>/dev/null; then
        say "stopping snakemake (SIGINT to pid $SMK_PID)"
        kill -INT "$SMK_PID" 2>/dev/null
        for ((i = 0; i < 240; i++)); do kill -0 "$SMK_PID" 2>/dev/null || break; sleep 1; done
        kill -0 "$SMK_PID" 2>/dev/null && kill -KILL "$SMK_PID" 2>/dev/null
    fi
    for uuid in "${RUN_UUIDS[@]}"; do # our Slurm jobs, should any be left
        scancel --name "$uuid" 2>/dev/null
    done
    mapfile -t ours < <(csort -u "$STARTED_LIST" 2>/dev/null)
    if [ ${#ours[@]} -gt 0 ]; then
        say "stopping the daemons this test started: ${ours[*]}"
        LOCAL_SLURM_STATE=$STATE "$HERE/stop-local-slurm.sh" "${ours[@]}" 2>&1
    else
        say "this test started no daemon; none stopped"
    fi
    [ "$rc" = 0 ] || [ "$FAILED" -gt 0 ] || FAILED=1 # died outside a check
    if [ "$FAILED" = 0 ] && [ "${MVA_SLURM_KEEP:-0}" != 1 ]; then
        rm -rf "$WORK"
    else
        say "kept the working directory $WORK"
    fi
    say "done in $((SECONDS - T0)) s"
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ] && exit 0
    exit 1
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

"$PYTHON" -c "import snakemake_executor_plugin_slurm" ||
    abort "$PYTHON cannot import snakemake_executor_plugin_slurm (pip install -e . installs it)"
say "Python $("$PYTHON" -c 'import sys; print(sys.executable)') (Snakemake and every Slurm job run it)"

# ----------------------------------------------------------------------------------------- cluster ---
# The rules ask for real-cluster sizes (heavy stages 16 GB, twice that on a retry), so the node advertises
# 64 GB and 4 CPUs (config_overrides; nothing is enforced without cgroups, the smoke jobs use < 1 GB each).
say "starting the local Slurm cluster"
if ! LOCAL_SLURM_STARTED_LIST=$STARTED_LIST LOCAL_SLURM_CPUS=${LOCAL_SLURM_CPUS:-4} \
    LOCAL_SLURM_MEM_MB=${LOCAL_SLURM_MEM_MB:-64000} "$HERE/start-local-slurm.sh" >"$WORK/start.log" 2>&1; then
    tail -n 40 "$WORK/start.log"
    abort "start the local Slurm cluster (log above)"
fi
PARTITION=$(sinfo -h -o '%P' | sed -n 's/\*$//p' | head -n 1)
ACCOUNT=${LOCAL_SLURM_ACCOUNT:-local}
say "cluster up: $(sinfo -h -N -o '%N %c CPUs %m MB %T' | head -n 1), partition $PARTITION, account $ACCOUNT"

# -------------------------------------------------------------------------------------------- data ---
DATA=${MVA_SHARED_DATA:-$REPO/../shared/data}
if [ -f "$DATA/hh-rlhf/helpful-base/test.jsonl.gz" ] && [ -f "$DATA/hh-rlhf/harmless-base/test.jsonl.gz" ]; then
    DATA=$(cd "$DATA" && pwd)
    say "data root $DATA"
else
    say "no HH data under $DATA: writing synthetic HH rows (tests/synthetic.py)"
    DATA=$WORK/data
    (cd "$REPO/tests" && "$PYTHON" -c "import sys; from pathlib import Path
from synthetic import write_smoke_data_root; write_smoke_data_root(Path(sys.argv[1]))" "$DATA") ||
        abort "write synthetic data"
fi

# ---------------------------------------------------------------------------------------- helpers ---
cd "$WORK" || abort "cd $WORK"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
# The profile as a user runs it, plus: the data root; this cluster's partition and account (as a site sets
# them); --cores 2 = threads (--cpus-per-task) of the heavy stages on this small node; fast status polling.
COMMON=(--snakefile "$REPO/Snakefile" --profile "$REPO/profiles/slurm" --configfile "$REPO/config/smoke.yaml"
    --cores 2 --default-resources "slurm_partition=$PARTITION" "slurm_account=$ACCOUNT" mem_mb=4000 runtime=60
    --slurm-init-seconds-before-status-checks 1 --seconds-between-status-checks 1)
GOOD_CONFIG="data_roots=['$DATA']"
BAD_RM=$WORK/no-such-reward-model
BAD_CONFIG="values={harmless: {reward_model: {source: '$BAD_RM'}}}"

# smk LOG ARGS...: one snakemake run, at most $LIMIT s. SIGINT, never SIGTERM: on SIGINT snakemake cancels its
# Slurm jobs and exits, on SIGTERM it waits for them. In the background, so that a signal to this script
# reaches the cleanup at once. Returns snakemake's exit status.
smk() {
    local log=$1 rc uuid
    shift
    timeout -s INT -k 200 "$LIMIT" "$PYTHON" -m snakemake "${COMMON[@]}" "$@" >"$log" 2>&1 &
    SMK_PID=$!
    wait "$SMK_PID"
    rc=$?
    SMK_PID=""
    uuid=$(sed -n 's/^SLURM run ID: //p' "$log" | head -n 1)
    [ -n "$uuid" ] && RUN_UUIDS+=("$uuid")
    return "$rc"
}
run_uuid() { sed -n 's/^SLURM run ID: //p' "$1" | head -n 1; }
# sacct_jobs UUID: "rule|State|ReqMem|ReqTRES" per Slurm job of one snakemake run, in submission order (the
# plugin names all jobs of a run after its UUID and writes "rule_<rule>_wildcards_<values>" into --comment,
# which sacct shows because AccountingStoreFlags=job_comment)
sacct_jobs() {
    sacct -X -n -P --name "$1" --starttime now-2days --format=JobIdRaw,Comment,State,ReqMem,ReqTRES |
        awk -F'|' '{r = $2; sub(/^rule_/, "", r); sub(/_wildcards_.*/, "", r); print $1 "|" r "|" $3 "|" $4 "|" $5}' |
        csort -t'|' -k1,1n | cut -d'|' -f2-
}
count_rules() { csort | uniq -c | awk '{print $2, $1}'; } # lines of rule names -> "rule count", sorted
submitted_rules() { # rule of every job a run log says was submitted to Slurm
    awk '/^(local)?rule [A-Za-z_0-9]+:$/ {r = substr($2, 1, length($2) - 1)}
         /^    jobid: [0-9]+$/ {rule_of[$2] = r}
         /^Job [0-9]+ has been submitted with SLURM jobid/ {print rule_of[$2]}' "$1"
}
# (no `cmd | grep -q` under pipefail: grep -q exits at the first match and the writer may die of SIGPIPE)
nothing_to_do() { "$PYTHON" -m snakemake "${COMMON[@]}" --config "$GOOD_CONFIG" -n >dry.log 2>&1; grep -q 'Nothing to be done' dry.log; }

# ------------------------------------------------------------------------------------------- plan ---
# What the whole DAG needs from Slurm: every job of a dry run whose rule is not local (localrule: True, `all`).
say "planning the DAG (dry run)"
"$PYTHON" -m snakemake "${COMMON[@]}" --config "$GOOD_CONFIG" -n >plan.log 2>&1 ||
    { tail -n 30 plan.log; abort "dry run of the smoke DAG"; }
LOCAL_RULES=" all $(awk '/^rule [A-Za-z_0-9]+:/ {r = substr($2, 1, length($2) - 1)} /^ +localrule: +True/ {print r}' \
    "$REPO"/rules/*.smk | csort -u | tr '\n' ' ')"
awk '/^Job stats:/ {s = 1; next} s && /^total/ {exit} s && NF == 2 && $2 ~ /^[0-9]+$/ {print $1, $2}' plan.log |
    while read -r rule n; do [[ "$LOCAL_RULES" == *" $rule "* ]] || echo "$rule $n"; done | csort >expected.counts
EXPECTED=$(awk '{s += $2} END {print s + 0}' expected.counts)
[ "$EXPECTED" -gt 0 ] || { tail -n 30 plan.log; abort "no Slurm job in the dry run"; }
say "$EXPECTED Slurm jobs in the DAG; local rules:$LOCAL_RULES"

# --------------------------------------------------------------------------------- 1. failing run ---
say "run 1: up to scoring, harmless reward model -> $BAD_RM (must fail in Slurm)"
smk run1.log --config "$GOOD_CONFIG" "$BAD_CONFIG" --omit-from score
rc1=$?
UUID1=$(run_uuid run1.log)
say "run 1 exited $rc1 (Slurm jobs named $UUID1)"
check "run 1 exits non-zero, by itself (not the timeout)" test "$rc1" != 0 -a "$rc1" != 124 -a "$rc1" != 137
check "run 1 reports reward_model_accuracy's Slurm job as FAILED" \
    sh -c "grep -q '^Error in rule reward_model_accuracy:' run1.log && grep -q \"SLURM status is: 'FAILED'\" run1.log"
sacct_jobs "$UUID1" >sacct1.txt
check "sacct: run 1's only unsuccessful jobs are reward_model_accuracy and its retry, both FAILED" \
    test "$(awk -F'|' '$2 != "COMPLETED" {print $1 "|" $2}' sacct1.txt | tr '\n' ' ')" = \
    "reward_model_accuracy|FAILED reward_model_accuracy|FAILED "
check "sacct: the retry asks for twice the memory (8000M, then 16000M)" \
    test "$(awk -F'|' '$2 == "FAILED" {print $3}' sacct1.txt | tr '\n' ' ')" = "8000M 16000M "
# (outputs are looked up by name below results/smoke, wherever the layout puts them, e.g. seed_<s>/)
found() { [ -n "$(find results/smoke -path "*/$1" -size +0 -print -quit 2>/dev/null)" ]; }
kept_going() {
    found value_vectors/mva/harmless/adapter_model.safetensors && found evaluation/mva/generations.parquet &&
        found reward_models/accuracy_helpful.json && ! found reward_models/accuracy_harmless.json
}
check "run 1 kept going: value vectors, generations and the helpful reward model were built" kept_going

# --------------------------------------------------------------------------------- 2. resumed run ---
say "run 2: the whole DAG with the real config (resume)"
smk run2.log --config "$GOOD_CONFIG"
rc2=$?
UUID2=$(run_uuid run2.log)
say "run 2 exited $rc2 (Slurm jobs named $UUID2)"
check "run 2 completes (exit 0)" test "$rc2" = 0
[ "$rc2" = 0 ] || tail -n 40 run2.log
# what run 2 had to do: every Slurm job of the DAG less those run 1 completed
awk -F'|' '$2 == "COMPLETED" {print $1}' sacct1.txt | count_rules >done1.counts
awk 'NR == FNR {done[$1] = $2; next} $2 > done[$1] {print $1, $2 - done[$1]}' done1.counts expected.counts \
    >missing.counts
submitted_rules run2.log | count_rules >submitted2.counts
check "run 2 submits exactly what run 1 left undone: $(awk '{printf "%s%s x%s", s, $1, $2; s = ", "}' missing.counts)" \
    diff missing.counts submitted2.counts
check "a dry run afterwards has nothing to do" nothing_to_do

# ------------------------------------------------------- artifacts (as the local smoke run's tests) ---
R=results/smoke
check "value vectors (independent/helpful, independent/harmless, mva/harmless): finite weights, training log" \
    "$PYTHON" -c "
import pandas as pd
from pathlib import Path
from safetensors.torch import load_file
for d in ['independent/helpful', 'independent/harmless', 'mva/harmless']:
    found = sorted(Path('$R').rglob('value_vectors/%s/adapter_model.safetensors' % d))
    assert found, d
    for f in found:
        w = load_file(f)
        assert w and all(t.isfinite().all() for t in w.values()), f
        assert 'penalty' in pd.read_parquet(f.parent / 'training_log.parquet').columns, f
"
check "decorrelation tables (mva, and independent: soup's) with rows and the HSIC/cosine columns" "$PYTHON" -c "
import pandas as pd
from pathlib import Path
from mva_core.decorrelation import METRICS
for m in ['mva', 'independent']:
    found = sorted(Path('$R').rglob('decorrelation/%s.parquet' % m))
    assert found, m
    for f in found:
        t = pd.read_parquet(f)
        assert len(t) > 0 and set(METRICS) <= set(t.columns), (f, list(t.columns))
"
check "generations and scores of every method (a score per generation and value), frontiers" "$PYTHON" -c "
import pandas as pd
from pathlib import Path
runs = sorted(p.parent for p in Path('$R').rglob('evaluation/*/generations.parquet'))
assert len({r.name for r in runs}) >= 2, runs
for r in runs:
    n = len(pd.read_parquet(r / 'generations.parquet'))
    for value in ['helpful', 'harmless']:
        scores = pd.read_parquet(r / ('scores_%s.parquet' % value))
        assert n > 0 and len(scores) == n and scores['reward'].notna().all(), (r, value)
assert len(pd.read_parquet('$R/tables/frontiers.parquet')) > 0
"
check "figures (frontier, win rates, single value vectors, training curves; png and pdf)" "$PYTHON" -c "
from pathlib import Path
for stem in ['frontier_helpful_vs_harmless', 'win_rates', 'single_value_vectors', 'training_curves']:
    for ext in ['png', 'pdf']:
        assert Path('$R/figures/%s.%s' % (stem, ext)).stat().st_size > 0, (stem, ext)
"
check "summary.md (hypervolume, reward-model accuracy)" \
    sh -c "grep -q 'Hypervolume' $R/summary.md && grep -q 'pairwise accuracy' $R/summary.md"
check "no temporary files left in results/" sh -c "! find $R -name '*.tmp' | grep -q ."

# ---------------------------------------------------- 3. sacct: one Slurm job per non-local job ---
sacct_jobs "$UUID2" >sacct2.txt
cat sacct1.txt sacct2.txt | awk -F'|' '$2 == "COMPLETED" {print $1}' | count_rules >completed.counts
check "sacct: exactly one COMPLETED Slurm job per non-local job of the DAG, rule by rule ($EXPECTED)" \
    diff expected.counts completed.counts
n_sub=$(cat run1.log run2.log | grep -c 'has been submitted with SLURM jobid')
n_sacct=$(cat sacct1.txt sacct2.txt | wc -l)
check "sacct: as many Slurm jobs as the plugin submitted ($n_sub submitted, $n_sacct in sacct)" \
    test "$n_sub" = "$n_sacct"
check "sacct: every job of run 2 COMPLETED" sh -c "! grep -v '|COMPLETED|' sacct2.txt | grep -q ."
# threads -> --cpus-per-task, and no GPU for CPU-only stages (compute.gpus_per_job = 0 must send no --gpus):
# every job's requested TRES (cpu=N, no gres/gpu) against the threads the dry run planned for its rule
awk '/^(local)?rule [A-Za-z_0-9]+:$/ {r = substr($2, 1, length($2) - 1); t[r] = 1}
     /^    threads: [0-9]+$/ {t[r] = $2}
     END {for (r in t) print r, t[r]}' plan.log | csort >threads.plan
tres_ok() {
    cat sacct1.txt sacct2.txt | awk -F'|' 'NR == FNR {split($0, a, " "); want[a[1]] = a[2]; next}
        {cpu = ""; n = split($4, kv, ","); for (i = 1; i <= n; i++) if (kv[i] ~ /^cpu=/) cpu = substr(kv[i], 5)
         if (cpu != want[$1] || $4 ~ /gpu/) {print "  unexpected TRES for " $1 ": " $4 " (threads " want[$1] ")"; bad = 1}}
        END {exit bad}' threads.plan -
}
check "sacct: each job got --cpus-per-task = its threads (heavy $(awk '$1 == "sft" {print $2}' threads.plan), light 1) and no GPU" tres_ok

# ------------------------------------------------------------- 4. a GPU count > 0 reaches sbatch ---
# compute.gpus_per_job = 1 must make the GPU stages ask for --gpus=1; this node has no GPU, so Slurm rejects
# the submission, and the error shows the sbatch line (two reward_model_accuracy jobs, each tried twice).
# (a config file, not --config: Snakemake reads nested --config values as strings, and the schema wants a number)
say "run 3: reward_model_accuracy with compute.gpus_per_job=1 (rejected: no GPU here)"
printf 'compute: {gpus_per_job: 1}\n' >gpu.yaml
smk run3.log --configfile "$REPO/config/smoke.yaml" gpu.yaml --config "$GOOD_CONFIG" \
    --forcerun reward_model_accuracy --until reward_model_accuracy
rc3=$?
gpu_line_ok() {
    [ "$rc3" != 0 ] && grep -q 'SLURM sbatch failed' run3.log &&
        [ "$(grep -A1 '^    sbatch call:' run3.log | grep -c -- "--comment rule_reward_model_accuracy.* --gpus=1 ")" -gt 0 ]
}
check "gpus_per_job: 1 puts --gpus=1 into the sbatch call of a GPU stage (exit $rc3)" gpu_line_ok
say "sacct: run 1: $(wc -l <sacct1.txt) Slurm jobs ($(grep -c '|COMPLETED|' sacct1.txt) COMPLETED," \
    "$(grep -c '|FAILED|' sacct1.txt) FAILED); run 2: $(wc -l <sacct2.txt) Slurm jobs"
# the summary line is printed by cleanup, after the daemons are stopped
