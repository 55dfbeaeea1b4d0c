#!/usr/bin/env bash
# The first ten minutes of a new user, scripted (issue 21): a fresh virtual environment with this
# checkout installed as the README says (no torch, no numpy, no DeepSpeed in it: a login node),
# then every command on the files people have (a plain state dict, a .safetensors file and a folder
# of shards, a DeepSpeed save, a Hugging Face Trainer run), bad paths, and Ctrl-C. Each command is
# printed with its output and its exit status. Not part of the test suite (it installs from the
# package index); run it by hand: bash scripts/first_contact.sh [PYTHON]
#
# PYTHON (default python3) makes the fresh environment. TORCH_PYTHON (default the 3.11 test venv)
# writes the plain torch files with torch; without it, the pinned copies in tests/data are used.
set -u
cd "$(dirname "$0")/.."
root=$PWD
python=${1:-python3}
torch_python=${TORCH_PYTHON:-$root/.venvs/py3.11/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() {  # print the command as typed, run it in $work, print its exit status
    printf '\n$ %s\n' "$*"
    (cd "$work" && eval "$@") 2>&1
    printf '[exit %s]\n' "$?"
}

echo "# first contact: $("$python" --version 2>&1), $(uname -sm), $(date -u +%FT%TZ)"
"$python" -m venv "$work/venv" || exit 1
"$work/venv/bin/python" -m pip install -q "$root" 2>&1 | grep -v '^\[notice\]' || true
export PATH="$work/venv/bin:$PATH"
run "python -c 'import ckptkeys, sys; print(sorted(m for m in (\"torch\", \"numpy\", \"deepspeed\") if m in sys.modules) or \"no torch, numpy or deepspeed imported\")'"

echo
echo "## The README's first commands"
run ckptkeys --version
run ckptkeys inspect --example

echo
echo "## Files people have"
cp -R "$root/tests/data/clients/hf_trainer_z2_bf16" "$work/trainer_run"
cp -R "$root/tests/data/fixtures/z2_bf16_ws2" "$work/ds_save"
cp "$work/trainer_run/model.safetensors" "$work/model.safetensors"
if "$torch_python" -c 'import torch' 2>/dev/null; then
    "$torch_python" - "$work" <<'EOF'
import sys, torch
torch.manual_seed(0)
model = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(7)])  # 14 tensors
torch.save(model.state_dict(), f"{sys.argv[1]}/model.pt")
torch.save(model.state_dict(), f"{sys.argv[1]}/pytorch_model.bin", _use_new_zipfile_serialization=False)
EOF
else
    echo "(no torch at $torch_python: plain files from tests/data)"
    cp "$root"/tests/data/plain/* "$work/"
fi
run ckptkeys inspect model.pt
run ckptkeys validate model.pt
run ckptkeys inspect pytorch_model.bin
run ckptkeys inspect model.safetensors
run ckptkeys validate model.safetensors
run ckptkeys inspect trainer_run
run ckptkeys validate trainer_run
run ckptkeys validate ds_save
run ckptkeys validate --fail-on warning ds_save
run ckptkeys validate --require ds_to_universal ds_save
run ckptkeys inspect --json ds_save "| python -c 'import json,sys; d=json.load(sys.stdin); print(d[\"summary\"], d[\"exit\"])'"

echo
echo "## Getting weights out, then reading them back"
run ckptkeys export trainer_run out --max-shard-size 40KB
run ls out
run ckptkeys inspect out
run ckptkeys validate out
run ckptkeys export ds_save out_bf16 --dtype bf16

echo
echo "## Keys and code"
run ckptkeys keys ds_version
run "ckptkeys keys OptimizerKeys | head -5"
printf 'sd = torch.load(path)\nstage = sd["optimizer_state_dict"]["zero_stage"]\n' > "$work/train.py"
run ckptkeys lint train.py
run ckptkeys lint --diff train.py

echo
echo "## In the REPL"
run "python -c 'from ckptkeys import read, scan, plan_export; print(repr(read(\"ds_save/global_step3/mp_rank_00_model_states.pt\"))); print(repr(scan(\"ds_save\"))); print(repr(plan_export(\"ds_save\")))'"
run "python -c 'from ckptkeys import OptimizerKeys; print(OptimizerKeys.PARTITION_COUNT.__doc__)'"
run "python -c 'from ckptkeys import validate; validate(\"ds_save/global_step3/mp_rank_00_model_states.pt\", kind=\"model_states\")' 2>&1 | tail -1"

echo
echo "## Mistakes"
run ckptkeys inspect nope
run ckptkeys export nope out2
run ckptkeys export ds_save out3 --tag nope
touch "$work/a_file"
run ckptkeys export ds_save a_file
run ckptkeys export ds_save out
run ckptkeys export ds_save out4 --dtype bf8
run ckptkeys keys nope
run ckptkeys inspect model.pt --depth -1

echo
echo "## Ctrl-C (SIGINT one second into a long lint)"
big=$("$work/venv/bin/python" -c 'import os; print(os.path.dirname(os.__file__))')
printf '\n$ ckptkeys lint %s  (SIGINT after 1 s)\n' "$big"
"$work/venv/bin/python" - "$big" <<'EOF'
import signal, subprocess, sys, time
reset = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background shell's child ignores SIGINT
child = subprocess.Popen(["ckptkeys", "lint", sys.argv[1]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=reset)
time.sleep(1)
child.send_signal(signal.SIGINT)
_, err = child.communicate()
sys.stdout.write(err.decode())
print(f"[exit {child.returncode}]")
EOF
