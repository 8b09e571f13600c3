"""nanochat: the library of nanochat-flow (model, tokenizer, engine, stages' shared parts) and its entry points.

Importing it first thing sets how long torch's idle OpenMP threads spin before they sleep, for every stage,
the chat tools and the web server, unless the environment already says (OMP_WAIT_POLICY or GOMP_SPINCOUNT).
libgomp reads it once, when torch is imported, so this must come before any `import torch`.
Measured on 2 cores by bench/shared_machine.py (tiny model; tokens/s alone / beside a second training):
  libgomp's default spin (300,000)   train 27,100 / 6,700 (1,800 to 11,500)   eval 87,900 / 8,200
  GOMP_SPINCOUNT=3000 (ours)         train 25,100 / 11,000                    eval 84,900 / 31,000
  OMP_WAIT_POLICY=PASSIVE            train 15,800 / 15,200                    eval 41,200 / 47,100
A short spin keeps over 90 % of the speed alone and is steady beside another CPU-heavy process (a second run,
a SLURM job on the same node, a browser), where the default is erratic; sleeping at once halves the speed
alone. docs/explanation/training-environments.md has the whole table.
"""

import os

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "3000"
