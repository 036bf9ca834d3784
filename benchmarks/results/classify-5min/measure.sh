#!/bin/bash
# the five 5-minute classify runs, one after another, not niced
cd /tmp/vis
export PYTHONPATH=/work/wt-visual MPLBACKEND=Agg
for a in none se cbam nonlocal; do
  echo "=== cnn $a $(date -u +%T)"
  /usr/bin/time -f "WALL %e s" python -m attnzoo -q train classify --model cnn --attention $a --minutes 5 --out /tmp/vis/runs/cnn-$a
done
echo "=== vit $(date -u +%T)"
/usr/bin/time -f "WALL %e s" python -m attnzoo -q train classify --model vit --minutes 5 --out /tmp/vis/runs/vit-5
echo "=== done $(date -u +%T)"
