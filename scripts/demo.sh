#!/usr/bin/env bash
# `make demo`: run examples/quickstart with the provider `make install` just put in
# the implied local plugin mirror, and print the run's results.
source "$(dirname "$0")/lib.sh"
tf=$(find_terraform)
[ -n "$tf" ] || { echo "terraform (or tofu) is required on PATH"; exit 1; }
cd "$ROOT/examples/quickstart"
# A rebuilt binary under the same version no longer matches the old lock file.
rm -rf .terraform .terraform.lock.hcl
say "terraform init (offline, from ~/.terraform.d/plugins)"
"$tf" init -input=false -no-color >/dev/null
say "terraform apply: build the scikit-learn environment (first run only), snapshot src/, run train.py"
"$tf" apply -auto-approve -input=false -no-color | grep -E '^(aml_|Apply complete)'
say "training log (last lines of $("$tf" output -raw run_id))"
"$tf" output -raw log_tail | tail -4
say "results"
for o in status accuracy loss; do printf '  %-9s %s\n' "$o" "$("$tf" output -raw $o)"; done
printf '  %-9s cache hit: %s, built in %.1fs\n' env "$("$tf" output -raw environment_cache_hit)" "$("$tf" output -raw environment_build_seconds)"
printf '  %-9s %s\n' model "$("$tf" output -raw outputs_path)/model.pkl"
