"""Write the shipped examples from the icon benchmark: supports and queries of one held-out class.

The class comes from fold 0, which the built-in model diffews-icons-small never trained on; the
images are its *test* images (never used to train or validate anything). Writes::

    examples/support/<class>_support_<i>.jpg, ..._mask.png    the support images and masks
    examples/query/<class>_query_<i>.jpg                      the queries
    examples/query_ground_truth/<class>_query_<i>_mask.png    their true masks
    examples/SOURCES.md                                 every pasted icon and background, with its licence

Run (after building the benchmark, see docs/cutouts.md):

    python examples/make_examples.py --root data/iconbench --class-name CLASS \\
        --supports Papirus__0004 --queries Moka__0001 Paper__0002 bloom__0003
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="the icon benchmark (diffews data composite output)")
    parser.add_argument("--class-name", required=True, help="a fold-0 class")
    parser.add_argument("--supports", nargs="+", required=True, metavar="STEM", help="test image stems used as supports")
    parser.add_argument("--queries", nargs="+", required=True, metavar="STEM", help="test image stems used as queries")
    args = parser.parse_args()

    folds = json.loads((args.root / "benchmark.json").read_text())["folds"]
    if args.class_name not in folds[0]:
        raise SystemExit(f"{args.class_name} is not a fold-0 (held-out) class")
    source = args.root / "test" / args.class_name
    for folder in ("support", "query", "query_ground_truth"):
        shutil.rmtree(HERE / folder, ignore_errors=True)
        (HERE / folder).mkdir()
    name = args.class_name.replace("-", "_")
    written = {}
    for role, stems in (("support", args.supports), ("query", args.queries)):
        for number, stem in enumerate(stems, 1):
            out = f"{name}_{role}_{number}"
            shutil.copyfile(source / f"{stem}.jpg", HERE / role / f"{out}.jpg")
            mask_folder = "support" if role == "support" else "query_ground_truth"
            shutil.copyfile(source / f"{stem}_mask.png", HERE / mask_folder / f"{out}_mask.png")
            written[f"test/{args.class_name}/{stem}.jpg"] = f"{role}/{out}.jpg"
    rows = [json.loads(line) for line in (args.root / "manifest.jsonl").read_text().splitlines() if line.strip()]
    lines = [
        "# Sources of the example images",
        "",
        f"Test images of the held-out class `{args.class_name}` of the icon benchmark (fold 0), written by",
        "`examples/make_examples.py`. Each image pastes icons from Debian icon-theme packages onto a background;",
        "every pasted file and its licence (from the packages' copyright files) is listed below.",
        "",
    ]
    for row in sorted((r for r in rows if r["image"] in written), key=lambda r: written[r["image"]]):
        lines.append(f"## `{written[row['image']]}`")
        lines.append("")
        background = row["background"]
        lines.append(f"- background: {background['source']} — licence: {background.get('licence') or 'unknown'}")
        for item in row["objects"]:
            lines.append(f"- {item['role']} `{item['class']}`: {item['source']} — licence: {item.get('licence') or 'unknown'}")
        lines.append("")
    (HERE / "SOURCES.md").write_text("\n".join(lines))
    print(f"wrote {len(written)} examples of {args.class_name} and SOURCES.md")


if __name__ == "__main__":
    main()
