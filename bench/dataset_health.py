"""The dataset check on 100 MB of text: how long it takes from nothing, and from its cache.

    .venv/bin/python -m bench.dataset_health                    # 100 MB, 3 repeats from nothing, 1 cached
    .venv/bin/python -m bench.dataset_health --megabytes 20 --repeats 1
    .venv/bin/python -m bench.dataset_health --keep /tmp/corpus  # write the corpus there and keep it

The corpus is JSONL made from the prose of the Python documentation
(``pydoc_data.topics``, on every machine): each document is 3 to 12 of its
sentences, one a line, with a fifth of each sentence's words swapped for
random words of the vocabulary, so documents do not share long runs by
chance. Planted: 5% of documents are exact copies of a recent one and 3% are
near copies (one word changed), which the check must find.

Each repeat from nothing runs ``check_dataset`` in a fresh LMWB_HOME (no
cached report or anything else), without a model (UTF-8 bytes as tokens), in
this process; then one more check of the same data reads the cache. It prints
every repeat with the time of each phase, the median and the spread, the
fractions found against those planted, and the load average (the machine is
shared). The target is under 2 minutes from nothing; it exits 1 if the median
misses it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_SECONDS = 120.0
EXACT_SHARE, NEAR_SHARE = 0.05, 0.03


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> dict[str, int]:
    """Write the JSONL corpus; return how many documents of each kind it holds."""
    import pydoc_data.topics

    prose = "\n".join(pydoc_data.topics.topics.values())
    sentences = [s.split() for s in re.split(r"(?<=[.!?])\s+", prose) if 20 < len(s.strip()) < 400]
    vocabulary = sorted({word for sentence in sentences for word in sentence})
    rng = random.Random(seed)
    recent: list[str] = []
    counts = {"documents": 0, "exact": 0, "near": 0}
    size, limit = 0, int(megabytes * 1e6)

    def sentence() -> str:
        words = list(rng.choice(sentences))
        for _ in range(max(1, len(words) // 5)):
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
        return " ".join(words)

    with open(path, "w", encoding="utf-8") as stream:
        while size < limit:
            draw = rng.random()
            if recent and draw < EXACT_SHARE:
                text, kind = rng.choice(recent), "exact"
            elif recent and draw < EXACT_SHARE + NEAR_SHARE:
                words = rng.choice(recent).split(" ")
                words[rng.randrange(len(words))] = "changed"
                text, kind = " ".join(words), "near"
            else:
                text, kind = "\n".join(sentence() for _ in range(rng.randint(3, 12))), ""
                recent = (recent + [text])[-5000:]
            line = json.dumps({"text": text}) + "\n"
            stream.write(line)
            size += len(line.encode("utf-8"))
            counts["documents"] += 1
            if kind:
                counts[kind] += 1
    return counts


def timed_check(corpus: Path, home: Path) -> tuple[float, float, dict[str, float], object]:
    """(wall seconds, CPU seconds, seconds per phase, report) of one check with LMWB_HOME=home."""
    os.environ["LMWB_HOME"] = str(home)
    from engine.dataset_health import check_dataset
    from engine.datasets import open_dataset

    starts: dict[str, float] = {}

    def progress(phase: str, done: int, total: int) -> None:
        starts.setdefault(phase, time.perf_counter())

    wall, cpu = time.perf_counter(), time.process_time()
    report = check_dataset(open_dataset(str(corpus)), progress=progress)
    end = time.perf_counter()
    order = sorted(starts, key=starts.get)  # type: ignore[arg-type]
    phases = {
        phase: (starts[order[i + 1]] if i + 1 < len(order) else end) - starts[phase] for i, phase in enumerate(order)
    }
    return end - wall, time.process_time() - cpu, phases, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=100.0, help="corpus size (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="checks from nothing (default 3)")
    parser.add_argument("--keep", type=Path, help="write the corpus in this folder and keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lmwb-bench-health-") as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        corpus = folder / "corpus.jsonl"
        began = time.perf_counter()
        planted = write_corpus(corpus, args.megabytes)
        print(
            f"corpus: {corpus.stat().st_size / 1e6:.1f} MB, {planted['documents']:,} documents "
            f"({planted['exact']:,} exact copies, {planted['near']:,} near copies), "
            f"written in {time.perf_counter() - began:.0f} s"
        )
        times = []
        report = None
        for repeat in range(1, args.repeats + 1):
            wall, cpu, phases, report = timed_check(corpus, Path(scratch) / f"home-{repeat}")
            times.append(wall)
            steps = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in phases.items())
            load = os.getloadavg()[0]
            print(f"repeat {repeat}: {wall:.1f} s wall, {cpu:.1f} s CPU ({steps}); load average {load:.1f}")
        cached, _, _, _ = timed_check(corpus, Path(scratch) / f"home-{args.repeats}")
        print(f"cached: {cached:.2f} s (the content hash, then the report read back)")
        median = statistics.median(times)
        spread = f"{min(times):.1f}-{max(times):.1f}"
        verdict = "within" if median < TARGET_SECONDS else "OVER"
        print(f"median {median:.1f} s ({spread}), {verdict} the target of {TARGET_SECONDS:.0f} s")
        if report is not None:
            found = report.duplicates.documents, report.near_duplicates.documents  # type: ignore[attr-defined]
            print(
                f"found {found[0]:,} exact copies (planted {planted['exact']:,}) and {found[1]:,} near copies "
                f"(planted {planted['near']:,}); leakage {report.leakage.fraction:.2%}"  # type: ignore[attr-defined]
            )
    return 0 if median < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
