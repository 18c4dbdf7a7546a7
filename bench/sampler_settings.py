"""Positives per second at equal quality: class kept, off-manifold and positives/s of the interpolating sampler for
DDIM 100 (the paper's setting), 50, 20 and 10 steps and DPM-Solver++ 20 and 10, in fp32 and bf16, on one trained UNet.

Every setting samples the same anchors (the first ``--anchors`` training images, one candidate each, the config's
w, η and blended layers, the same counter-based noise key) and is scored against one real reference
(clsp.positives.inspect.score_store), so the settings differ only in the solver, the step count and the precision.
Positives/s is anchors over the wall time of ``generate_positives`` (UNet load included, one process, the machine's
torch threads). Prints a markdown table and the cheapest setting no worse than DDIM-100 fp32 by more than
``--tolerance`` points on class kept (both judges) and off-manifold.

    python bench/sampler_settings.py configs/fashion_mnist.yaml --anchors 256 [--precisions fp32]
"""

import argparse
import json
import tempfile
from pathlib import Path

from clsp.config import load_config
from clsp.positives.sweep import score_setting

SETTINGS = [(solver, steps) for solver, steps in (("ddim", 100), ("ddim", 50), ("ddim", 20), ("ddim", 10))] + [
    ("dpm-solver++", 20),
    ("dpm-solver++", 10),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--anchors", type=int, default=256)
    parser.add_argument("--tolerance", type=float, default=1.0, help="points of class kept and off-manifold")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the rows")
    parser.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="comma-separated; fp32 alone on a CPU without bf16 units, where bf16 is emulated many times slower",
    )
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    if precisions[0] != "fp32" or not set(precisions) <= {"fp32", "bf16"}:
        parser.error("--precisions: fp32 first (DDIM-100 fp32 is the reference), then optionally bf16")
    cfg = load_config(args.config)
    rows, real = [], None
    with tempfile.TemporaryDirectory(prefix="clsp-sampler-") as tmp:
        for precision in precisions:
            for solver, steps in SETTINGS:
                root = Path(tmp) / f"{solver}-{steps}-{precision}"
                changes = {"solver": solver, "num_steps": steps, "precision": precision, "num_candidates": 1}
                done = score_setting(cfg, root, args.anchors, real, **changes)
                scores, seconds, real = done.scores, done.seconds, done.real
                rows.append(
                    {
                        "solver": solver,
                        "steps": steps,
                        "precision": precision,
                        "class_kept": 100 * scores["class_kept"],
                        "class_kept_cnn": 100 * scores["class_kept_cnn"],
                        "off_manifold": 100 * scores["off_manifold"],
                        "positives_per_s": args.anchors / seconds,
                        "judge_test_accuracy": 100 * scores["classifier"]["test_accuracy"],
                        "cnn_judge_test_accuracy": 100 * scores["cnn_judge"]["test_accuracy"],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    reference = rows[0]  # DDIM 100 fp32
    print(
        f"\n{args.anchors} anchors x 1 candidate; judge (real test accuracy) {reference['judge_test_accuracy']:.1f}%\n"
    )
    print(
        "| sampler | precision | class kept % | class kept (CNN) % | off-manifold % | positives/s | vs DDIM-100 fp32 |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        speed = r["positives_per_s"] / reference["positives_per_s"]
        print(
            f"| {r['solver']} {r['steps']} | {r['precision']} | {r['class_kept']:.1f} | {r['class_kept_cnn']:.1f} | "
            f"{r['off_manifold']:.1f} | "
            f"{r['positives_per_s']:.1f} | {speed:.2f}x |"
        )
    # equal quality: no worse than DDIM-100 fp32 by more than the tolerance (better is fine)
    equal = [
        r
        for r in rows
        if r["class_kept"] >= reference["class_kept"] - args.tolerance
        and r["class_kept_cnn"] >= reference["class_kept_cnn"] - args.tolerance
        and r["off_manifold"] <= reference["off_manifold"] + args.tolerance
    ]
    best = max(equal, key=lambda r: r["positives_per_s"])
    speed = best["positives_per_s"] / reference["positives_per_s"]
    print(
        f"\ncheapest within {args.tolerance:g} point(s): {best['solver']} {best['steps']} {best['precision']}, {speed:.2f}x"
    )
    if args.out:
        args.out.write_text(json.dumps({"anchors": args.anchors, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
