"""The seeds' other applications on real data, each on classes never seen in training:
one-shot drug discovery, speech, text-to-speech matching, an ensemble with a classifier.

    .venv/bin/python benchmarks/applications.py                     # every part
    .venv/bin/python benchmarks/applications.py --parts molecules   # one part; the others are kept

Parts: ``molecules`` (benchmarks/applications_molecules.py), ``speech``
(applications_speech.py: keyword spotting, speaker verification and text-to-speech matching),
``ensemble`` (applications_ensemble.py). Writes benchmarks/results/applications.json and .md.
"""

from benchmark_parts import run_parts

if __name__ == "__main__":
    run_parts(
        "applications",
        "Applications: molecules, speech, text-to-speech, ensemble",
        ["molecules", "speech", "ensemble"],
    )
